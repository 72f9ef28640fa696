#!/usr/bin/env bash
# The demo: a local control plane (real kube-apiserver + etcd), the Tollgate operator, the
# reference MCP server, and an agent pod applied with plain kubectl, injected with the sidecar by
# the operator's webhook and run from its stored spec; its calls are allowed, denied, and held
# until you run the `kubectl approve` line it prints. `--auto-approve` approves by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh

step "control plane binaries (built once from their Go modules, then cached)"
TOLLGATE_CONTROL_PLANE_DIR="$(bash e2e/scripts/build-control-plane.sh | tail -n 1)"
export TOLLGATE_CONTROL_PLANE_DIR
step "Helm from its Go module (built once, then cached): the chart installs Tollgate's RBAC"
TOLLGATE_HELM="$(bash e2e/scripts/build-helm.sh | tail -n 1)"
export TOLLGATE_HELM
step "MCP SDK clients and the reference server (pinned, cached)"
TOLLGATE_MCP_TOOLS="$(bash e2e/scripts/install-mcp-tools.sh | tail -n 1)"
export TOLLGATE_MCP_TOOLS
step "the official openai and anthropic SDKs (pinned, cached)"
TOLLGATE_MODEL_SDKS="$(bash e2e/scripts/install-model-sdks.sh | tail -n 1)"
export TOLLGATE_MODEL_SDKS
step "building Tollgate"
cargo build --quiet --locked --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/tollgate-demo" "$@"
