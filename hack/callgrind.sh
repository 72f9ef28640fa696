#!/usr/bin/env bash
# Runs a proxy under callgrind in place of the one a bench starts, to count its instructions per
# call: deterministic, where CPU time on a shared machine is not (docs/performance-history.md).
#   TOLLGATE_CALLGRIND_BIN=target/release/tollgate-sidecar TOLLGATE_BENCH_SIDECAR=hack/callgrind.sh \
#     target/release/bench-sidecar
#   callgrind_annotate --inclusive=yes /tmp/callgrind.tollgate-sidecar.<pid>   # then divide by the
#     call count of a function that runs once a call (`callgrind_annotate --tree=caller
#     --threshold=100` shows it; without the threshold, callers of small share are left out):
#     `strict::read` in the sidecar, `Prepared::model_call` in the gateway; an `async fn`'s count
#     is its polls, several a call
# One phase of a bench alone (the gateway bench's ledger-only saturation, then the budget's): run
# `callgrind_control -z` as the phase starts and `callgrind_control -d NAME` as it ends (each
# dump is a file of its own, `.1`, `.2`, ...).
# The figures under valgrind are not the ones to quote (it runs 50 times slower, and it hides the
# CPU's SHA extensions, so SHA-256 counts as software); instructions per call are.
set -euo pipefail
command -v valgrind >/dev/null || { echo "missing valgrind: apt-get install valgrind" >&2; exit 1; }
bin="${TOLLGATE_CALLGRIND_BIN:?the binary to run under callgrind}"
exec valgrind --tool=callgrind --dump-instr=no \
  --callgrind-out-file="${TOLLGATE_CALLGRIND_DIR:-/tmp}/callgrind.$(basename "$bin").%p" "$bin" "$@"
