#!/usr/bin/env bash
# Builds Helm from its Go module (helm.sh/helm/v3/cmd/helm, pinned) into a cache outside the repo.
# Idempotent: a second run with the binary present does nothing.
# Prints the path of the helm binary on its last line.
set -euo pipefail

HELM_VERSION="${TOLLGATE_HELM_VERSION:-v3.22.0}"
CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
OUT="$CACHE/helm/$HELM_VERSION"
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export GOMAXPROCS="${GOMAXPROCS:-2}"

if [[ -x "$OUT/helm" ]]; then
  echo "$OUT/helm"
  exit 0
fi
mkdir -p "$OUT" "$CACHE"
work="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# A wrapper module: `go install pkg@version` refuses modules whose go.mod has replace directives.
cat >"$work/go.mod" <<MOD
module tollgate.dev/tools/helm

go 1.24
MOD
echo "building helm $HELM_VERSION" >&2
(cd "$work" && go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2 \
  && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" -o "$OUT/helm.tmp" helm.sh/helm/v3/cmd/helm)
mv "$OUT/helm.tmp" "$OUT/helm"
echo "$OUT/helm"
