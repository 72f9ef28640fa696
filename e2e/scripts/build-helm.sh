#!/usr/bin/env bash
# Builds Helm from its Go module (helm.sh/helm/v3/cmd/helm, pinned) into a cache outside the repo.
# Idempotent: a second run with the binary present does nothing.
# Prints the path of the helm binary on its last line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
HELM_VERSION="${TOLLGATE_HELM_VERSION:-v3.22.0}"
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
