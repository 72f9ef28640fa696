#!/usr/bin/env bash
# Builds krew, kubectl's plugin manager, from its Go module into a cache outside the repo: the
# real installer that checks `plugins/approve.yaml` (its rules, the archive's checksum, `bin`,
# `files`) in the plugin's test. Idempotent. Prints the binary's path on its last line.
set -euo pipefail

KREW_VERSION="${TOLLGATE_KREW_VERSION:-v0.4.3}"
CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
OUT="$CACHE/krew/$KREW_VERSION"
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export GOMAXPROCS="${GOMAXPROCS:-2}"

if [[ -x "$OUT/kubectl-krew" ]]; then
  echo "$OUT/kubectl-krew"
  exit 0
fi
mkdir -p "$OUT"
work="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cat >"$work/go.mod" <<MOD
module tollgate.dev/tools/krew

go 1.24
MOD
echo "building krew $KREW_VERSION" >&2
(cd "$work" && go get -tool "sigs.k8s.io/krew/cmd/krew@$KREW_VERSION" >&2 \
  && go build -trimpath -ldflags "-s -w" -o "$OUT/kubectl-krew.tmp" sigs.k8s.io/krew/cmd/krew)
mv "$OUT/kubectl-krew.tmp" "$OUT/kubectl-krew"
echo "$OUT/kubectl-krew"
