# Shared helpers for the hack/ scripts.
export GOTOOLCHAIN=local
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Backtraces in test failures only, not in the CLIs' user-facing errors.
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
export TOLLGATE_CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
mkdir -p "$TOLLGATE_CACHE"

step() { printf '\n==> %s\n' "$*" >&2; }

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "missing $1: $2" >&2; exit 1; }
}
need cargo "install Rust (rustup)"
need go "install Go 1.26"
need kubectl "install kubectl"
need curl "apt-get install curl"
need python3 "install Python 3.10+"
need node "install Node.js 18+"
need npm "install npm"
