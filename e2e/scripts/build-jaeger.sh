#!/usr/bin/env bash
# Builds Jaeger (v2, the OpenTelemetry Collector distribution: OTLP receivers, in-memory storage,
# the query API) from its Go module into a cache outside the repo: the real OTLP receiver the
# tracing tests export to. Idempotent. Prints the binary's path on its last line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
go_tool jaeger github.com/jaegertracing/jaeger/cmd/jaeger "${TOLLGATE_JAEGER_VERSION:-v1.76.0}"
