#!/usr/bin/env bash
# Installs what `kubectl approve ui`'s browser tests drive: Debian's Chromium and ChromeDriver
# (packages chromium, chromium-driver) when missing, and the Selenium WebDriver client pinned
# with its dependency closure into a venv in a cache outside the repo:
# ${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/browser-<tag>/venv. Idempotent (a stamp file); safe
# to run concurrently (flock). Prints the install directory on its LAST stdout line; the
# directory's `chromedriver` and `chromium` files name the binaries.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  [[ "$(id -u)" == 0 ]] || { echo "chromium is missing and installing it needs root (apt-get install chromium chromium-driver)" >&2; exit 1; }
  echo "install-browser: installing chromium and chromium-driver from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
fi

# selenium 4.52.0 asks for certifi>=2026.10.23, newer than the registry serves; certifi is only
# its CA bundle for https, and the tests drive a local ChromeDriver over plain http.
PINS=(
  selenium==4.52.0
  certifi==2026.10.19.post1
  trio==0.35.0
  trio-websocket==0.12.2
  typing_extensions==4.16.0
  urllib3==2.8.0
  websocket-client==1.9.2
  attrs==26.1.0
  sortedcontainers==2.4.0
  idna==3.20
  outcome==1.3.0.post0
  sniffio==1.3.1
  wsproto==1.3.2
  h11==0.16.0
  PySocks==1.7.1
)
PYTHON="${TOLLGATE_PYTHON:-python3}"
tag="$(printf '%s\n' "${PINS[@]}" "$("$PYTHON" --version 2>&1)" | sha256sum | cut -c1-12)"
dir="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/browser-$tag"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [[ ! -f "$dir/.done" ]]; then
  echo "install-browser: installing selenium into $dir" >&2
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${PINS[@]}" >&2
  "$dir/venv/bin/python" -c 'import selenium.webdriver' >&2
  touch "$dir/.done"
fi
command -v chromium > "$dir/chromium"
command -v chromedriver > "$dir/chromedriver"
echo "$dir"
