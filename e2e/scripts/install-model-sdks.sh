#!/usr/bin/env bash
# Installs the official `openai` and `anthropic` Python SDKs, pinned with their whole dependency
# closure, into a venv in a cache outside the repo: ${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/
# model-sdks-<tag>/venv, the tag a hash of the pins. Idempotent (a stamp file); safe to run
# concurrently (flock). Prints the install directory on its LAST stdout line.
set -euo pipefail

PINS=(
  openai==3.51.0
  anthropic==2.10.0
  annotated-types==0.8.0
  anyio==4.16.0
  docstring_parser==0.18.0
  h11==0.16.0
  httpcore2==2.16.2
  httpx2==2.16.2
  idna==3.20
  jiter==0.19.0
  opentelemetry-api==1.45.2
  pydantic==2.14.4
  pydantic_core==2.50.5
  sniffio==1.3.1
  truststore==0.10.5
  typing-inspection==0.4.5
  typing_extensions==4.16.0
)
PYTHON="${TOLLGATE_PYTHON:-python3}"
tag="$(printf '%s\n' "${PINS[@]}" "$("$PYTHON" --version 2>&1)" | sha256sum | cut -c1-12)"
dir="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/model-sdks-$tag"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [[ ! -f "$dir/.done" ]]; then
  echo "install-model-sdks: installing into $dir" >&2
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${PINS[@]}" >&2
  "$dir/venv/bin/python" -c 'import openai, anthropic' >&2
  touch "$dir/.done"
fi
echo "$dir"
