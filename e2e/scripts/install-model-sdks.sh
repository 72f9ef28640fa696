#!/usr/bin/env bash
# Installs the official `openai` and `anthropic` Python SDKs, pinned with their whole dependency
# closure, into a venv in a cache outside the repo: ${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/
# model-sdks-<tag>/venv, the tag a hash of the pins. Idempotent (a stamp file); safe to run
# concurrently (flock). Prints the install directory on its LAST stdout line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

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
pinned_venv model-sdks 'import openai, anthropic' "${PINS[@]}"
echo "$dir"
