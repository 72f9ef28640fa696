# What the install and build scripts share; sourced, not run. Everything goes to a cache outside
# the repo (${TOLLGATE_CACHE:-$HOME/.cache/tollgate}); every step is idempotent and safe to run
# concurrently.

CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
PYTHON="${TOLLGATE_PYTHON:-python3}"

# pinned_venv NAME CHECK PIN...: a venv at $CACHE/NAME-<tag>/venv with exactly PIN... (no
# dependency resolution: the pins are the whole closure), the tag a hash of the pins and the
# Python version; CHECK is Python run in it once installed. Sets `dir`; holds the lock (fd 9)
# until the script exits, so what the caller adds to $dir is written once too.
pinned_venv() {
  local name="$1" check="$2"
  shift 2
  local tag
  tag="$(printf '%s\n' "$@" "$("$PYTHON" --version 2>&1)" | sha256sum | cut -c1-12)"
  dir="$CACHE/$name-$tag"
  mkdir -p "$CACHE"
  exec 9>"$dir.lock"
  flock 9
  if [[ ! -f "$dir/.done" ]]; then
    echo "install-$name: installing into $dir" >&2
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$@" >&2
    "$dir/venv/bin/python" -c "$check" >&2
    touch "$dir/.done"
  fi
}

# apt_install_missing "COMMAND..." PACKAGE...: installs Debian PACKAGEs unless every COMMAND is
# on PATH already (root only).
apt_install_missing() {
  local commands="$1" missing=0 c
  shift
  for c in $commands; do
    command -v "$c" >/dev/null 2>&1 || missing=1
  done
  [[ "$missing" == 1 ]] || return 0
  [[ "$(id -u)" == 0 ]] || { echo "$* missing, and installing them needs root (apt-get install $*)" >&2; exit 1; }
  echo "installing $* from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

# go_tool NAME PACKAGE VERSION [LDFLAGS]: builds Go PACKAGE at VERSION (of its module) into
# $CACHE/NAME/VERSION/NAME, through a wrapper module (`go install pkg@version` refuses modules
# whose go.mod has replace directives), with LDFLAGS added to the linker's. Prints the path.
go_tool() {
  local name="$1" package="$2" version="$3" ldflags="${4:-}"
  local out="$CACHE/$name/$version"
  export GOTOOLCHAIN=local
  export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
  # Two cores: one package compiled at a time keeps memory sane and leaves the other core usable.
  export GOMAXPROCS="${GOMAXPROCS:-2}"
  if [[ -x "$out/$name" ]]; then
    echo "$out/$name"
    return 0
  fi
  mkdir -p "$out"
  local work
  work="$(mktemp -d "$CACHE/build.XXXXXX")"
  printf 'module tollgate.dev/tools/%s\n\ngo 1.24\n' "$name" >"$work/go.mod"
  echo "building $name $version" >&2
  (cd "$work" && go get -tool "$package@$version" >&2 && go build -trimpath -ldflags "-s -w $ldflags" -o "$out/$name.tmp" "$package")
  rm -rf "$work"
  mv "$out/$name.tmp" "$out/$name"
  echo "$out/$name"
}
