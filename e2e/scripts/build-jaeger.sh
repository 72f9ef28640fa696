#!/usr/bin/env bash
# Builds Jaeger (v2, the OpenTelemetry Collector distribution: OTLP receivers, in-memory storage,
# the query API) from its Go module into a cache outside the repo: the real OTLP receiver the
# tracing tests export to. Idempotent. Prints the binary's path on its last line.
set -euo pipefail

JAEGER_VERSION="${TOLLGATE_JAEGER_VERSION:-v1.76.0}"
CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
OUT="$CACHE/jaeger/$JAEGER_VERSION"
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# Two cores: one package compiled at a time keeps memory sane and leaves the other core usable.
export GOMAXPROCS="${GOMAXPROCS:-2}"

if [[ -x "$OUT/jaeger" ]]; then
  echo "$OUT/jaeger"
  exit 0
fi
mkdir -p "$OUT"
work="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cat >"$work/go.mod" <<MOD
module tollgate.dev/tools/jaeger

go 1.24
MOD
echo "building jaeger $JAEGER_VERSION" >&2
(cd "$work" && go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >&2 \
  && go build -trimpath -ldflags "-s -w" -o "$OUT/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
mv "$OUT/jaeger.tmp" "$OUT/jaeger"
echo "$OUT/jaeger"
