#!/usr/bin/env bash
# Installs what `kubectl approve ui`'s browser tests drive: Debian's Chromium and ChromeDriver
# (packages chromium, chromium-driver) when missing, and the Selenium WebDriver client pinned
# with its dependency closure into a venv in a cache outside the repo:
# ${TOLLGATE_CACHE:-$HOME/.cache/tollgate}/browser-<tag>/venv. Idempotent (a stamp file); safe
# to run concurrently (flock). Prints the install directory on its LAST stdout line; the
# directory's `chromedriver` and `chromium` files name the binaries.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

apt_install_missing "chromium chromedriver" chromium chromium-driver

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
pinned_venv browser 'import selenium.webdriver' "${PINS[@]}"
command -v chromium > "$dir/chromium"
command -v chromedriver > "$dir/chromedriver"
echo "$dir"
