#!/usr/bin/env bash
# Every benchmark on a release build, each printing its figures beside the direct path's (or a
# bare proxy's) from the same run; writes docs/performance.md with the machine and the date.
# Timing depends on the machine: nothing in the test command runs these.
#   TOLLGATE_BENCH_QUICK=1  measure the release builds of the sidecar, gateway and operator, not
#                           the shipping ones (fat LTO, several minutes more to build)
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
need taskset "apt-get install util-linux"

step "control plane (kube-apiserver + etcd from their Go modules, cached)"
TOLLGATE_CONTROL_PLANE_DIR="$(bash e2e/scripts/build-control-plane.sh | tail -n 1)"
export TOLLGATE_CONTROL_PLANE_DIR

step "LiteLLM's proxy (PyPI, pinned, cached): what the gateway's added latency is compared with"
# Without it (PyPI out of reach) every bench still runs; the gateway's says the comparison was skipped.
if TOLLGATE_LITELLM="$(bash e2e/scripts/install-litellm.sh | tail -n 1)"; then
  export TOLLGATE_LITELLM
else
  echo "LiteLLM could not be installed: the gateway's bench skips the comparison" >&2
  unset TOLLGATE_LITELLM
fi

step "release build"
cargo build --release -p tollgate-bench -p tollgate-sidecar -p tollgate-gateway -p tollgate-operator --bins
if [[ "${TOLLGATE_BENCH_QUICK:-}" == "1" ]]; then
  sidecar="target/release/tollgate-sidecar"
  bins="$PWD/target/release"
else
  step "the shipping builds (fat LTO) of the sidecar, gateway and operator, as the image has them"
  cargo build --profile shipped -p tollgate-sidecar -p tollgate-gateway
  cargo build --profile shipped-small -p tollgate-operator
  sidecar="target/shipped/tollgate-sidecar"
  bins="$PWD/target/bench-bin"
  mkdir -p "$bins"
  ln -sf "$PWD/target/shipped/tollgate-gateway" "$PWD/target/shipped/tollgate-sidecar" "$PWD/target/shipped-small/tollgate-operator" "$bins/"
fi
export TOLLGATE_BENCH_SIDECAR="$sidecar"
# The operator and gateway the benches start are the shipping builds, not the test suite's.
export TOLLGATE_BIN_DIR="$bins"
# A missed target is a message, not a crash: no backtrace in the report.
export RUST_BACKTRACE=0

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
missed=()
run() { # name, command…  (a bench exits non-zero when it misses a target: noted, the rest still run)
  local name="$1"; shift
  step "bench: $name"
  if ! "$@" > >(tee "$out/$name") 2> >(tee "$out/$name.err" >&2); then
    missed+=("$name")
  fi
  wait
  cat "$out/$name.err" >> "$out/$name"
}
run decision taskset -c 1 target/release/bench-decision
run injection taskset -c 1 target/release/bench-injection
run sidecar target/release/bench-sidecar
run gateway target/release/bench-gateway
# The operator as the chart runs it: mimalloc, committing what it touches and purging at once
# (its Deployment template).
run scale env MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0 target/release/bench-scale

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
# Asked before the report is rewritten: the report itself is no change to what was measured.
dirty="$(git diff --quiet HEAD -- . ':(exclude)docs/performance.md' || echo ' (with uncommitted changes)')"
{
  echo "# Performance"
  echo
  echo "Written by \`hack/bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$(git rev-parse --short HEAD)\`$dirty."
  echo "Machine: $(nproc) CPUs ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)."
  echo "Sidecar binary: \`$sidecar\` ($(du -m "$sidecar" | cut -f1) MB on disk)."
  echo
  echo "Each bench measures Tollgate and its reference in the same run: the direct path (the"
  echo "provider or MCP server called without a proxy) and a bare hyper reverse proxy that reads the"
  echo "body and forwards it. The load generator and the mock upstream run on CPU 0, the proxy under"
  echo "test on CPU 1. Ratios, not absolute figures, are what carries from one machine to another."
  echo "The gateway's bench also puts LiteLLM's proxy (pinned, without a database) on the same CPU"
  echo "and mock provider, for the latency each adds."
  echo "Changes measured on the way here, with the runs that compare them: [performance-history.md](performance-history.md)."
  if ((${#missed[@]})); then
    echo
    echo "**Targets missed** in: ${missed[*]} (each bench's section says which, marked \`MISSED\`)."
    echo "Where each missed target's cost goes, and the next step: [What is left](performance-history.md#what-is-left)."
  fi
  for name in decision injection sidecar gateway scale; do
    echo
    echo "## $name"
    echo
    echo '```'
    cat "$out/$name"
    echo '```'
  done
} > docs/performance.md
step "wrote docs/performance.md"
if ((${#missed[@]})); then
  echo "targets missed in: ${missed[*]}" >&2
  exit 1
fi
