#!/usr/bin/env bash
# The demo: a local control plane (real kube-apiserver + etcd), Tollgate's API and the quick
# start applied to it, and the quick start's policy deciding calls.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh

step "control plane binaries (built once from their Go modules, then cached)"
TOLLGATE_CONTROL_PLANE_DIR="$(bash e2e/scripts/build-control-plane.sh | tail -n 1)"
export TOLLGATE_CONTROL_PLANE_DIR

step "building Tollgate"
cargo build --quiet --locked -p tollgate-e2e -p tollgate-cli
target="${CARGO_TARGET_DIR:-target}/debug"

step "starting the control plane"
run="$(mktemp -d)"
"$target/tollgate-dev-cluster" >"$run/cluster.out" 2>"$run/cluster.err" &
cluster=$!
trap 'kill "$cluster" 2>/dev/null; wait "$cluster" 2>/dev/null; rm -rf "$run"' EXIT
for _ in $(seq 1 600); do
  grep -q '^export KUBECONFIG=' "$run/cluster.out" 2>/dev/null && break
  kill -0 "$cluster" 2>/dev/null || { cat "$run/cluster.err" >&2; exit 1; }
  sleep 0.1
done
eval "$(grep '^export KUBECONFIG=' "$run/cluster.out")"
cat "$run/cluster.err" >&2

step "the Tollgate API is served"
kubectl get crd -l '!nothing' -o custom-columns=CRD:.metadata.name,ESTABLISHED:.status.conditions[?\(@.type==\"Established\"\)].status | grep -E 'CRD|tollgate'

step "applying the quick start (kubectl apply --server-side)"
kubectl apply --server-side -f examples/quickstart/00-namespace.yaml
kubectl apply --server-side -n tollgate-demo -f examples/quickstart/
kubectl get tollgate -n tollgate-demo

step "the API server refuses what is wrong"
cat <<'YAML' | kubectl apply -n tollgate-demo -f - || true
apiVersion: tollgate.dev/v1alpha1
kind: Budget
metadata: {name: upside-down}
spec: {period: Monthly, softLimitUSD: 500, hardLimitUSD: 100}
YAML

step "the quick start's policy decides calls (tollgate eval: the sidecar's decision core, offline)"
decide() {
  printf '\n$ %s %s\n' "$1" "$2"
  "$target/tollgate" eval -f examples/quickstart -n tollgate-demo --agent coder --server platform-tools --tool "$1" --args "$2"
}
decide read_file '{"path": "README.md"}'
decide delete_repository '{"name": "checkout"}'
decide deploy '{"environment": "production", "service": "checkout", "justification": "release 4.2"}'
decide deploy '{"environment": "staging", "service": "checkout", "justification": "smoke test"}'
decide deploy '{"environment": "production", "service": "checkout"}'
decide read_file '{"path": "/home/dev/.env"}'

if [[ "${1:-}" != "--no-wait" && -t 0 ]]; then
  step "the control plane is up: in another shell, $(grep '^export' "$run/cluster.out")"
  read -r -p "press Enter to stop " _
fi
