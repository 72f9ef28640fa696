#!/usr/bin/env bash
# Builds e2e/tools/argocd-health (Argo CD's Lua engine, gopher-lua v1.1.2, running a health
# check as Argo CD does) into a cache outside the repo. Idempotent. Prints the binary's path.
set -euo pipefail

LUA_VERSION="v1.1.2"
CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
src="$(cd "$(dirname "$0")/../tools/argocd-health" && pwd)"
tag="$(cat "$src/main.go" | sha256sum | cut -c1-12)-$LUA_VERSION"
OUT="$CACHE/argocd-health/$tag"
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

if [[ -x "$OUT/argocd-health" ]]; then
  echo "$OUT/argocd-health"
  exit 0
fi
mkdir -p "$OUT" "$CACHE"
work="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$src/main.go" "$work/"
cat >"$work/go.mod" <<MOD
module tollgate.dev/tools/argocd-health

go 1.24
MOD
echo "building argocd-health (gopher-lua $LUA_VERSION)" >&2
(cd "$work" && go get "github.com/yuin/gopher-lua@$LUA_VERSION" >&2 && go build -trimpath -o "$OUT/argocd-health.tmp" .)
mv "$OUT/argocd-health.tmp" "$OUT/argocd-health"
echo "$OUT/argocd-health"
