#!/usr/bin/env bash
# Builds krew, kubectl's plugin manager, from its Go module into a cache outside the repo: the
# real installer that checks `plugins/approve.yaml` (its rules, the archive's checksum, `bin`,
# `files`) in the plugin's test. Idempotent. Prints the binary's path on its last line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
go_tool kubectl-krew sigs.k8s.io/krew/cmd/krew "${TOLLGATE_KREW_VERSION:-v0.4.3}"
