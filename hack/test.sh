#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs (cached under ~/.cache),
# then runs every test of the workspace, end-to-end tests against a real control plane included.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh

step "control plane (kube-apiserver + etcd from their Go modules, cached)"
TOLLGATE_CONTROL_PLANE_DIR="$(bash e2e/scripts/build-control-plane.sh | tail -n 1)"
export TOLLGATE_CONTROL_PLANE_DIR

step "generated files are fresh"
cargo run --quiet --locked -p tollgate-api --bin crdgen -- --check

step "tests"
# Two cores: one test binary at a time keeps the control-plane tests from starving each other.
cargo test --workspace --locked -- --test-threads="${TOLLGATE_TEST_THREADS:-2}"
