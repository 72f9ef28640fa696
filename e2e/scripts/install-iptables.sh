#!/usr/bin/env bash
# Installs Debian's iptables (iptables and ip6tables, nf_tables backend) when it is missing:
# transparent mode's test runs the real rules in a network namespace of its own.
# Prints the path of iptables on its last line.
set -euo pipefail
if ! command -v iptables >/dev/null 2>&1 || ! command -v ip6tables >/dev/null 2>&1; then
  [[ "$(id -u)" == 0 ]] || { echo "iptables is missing and installing it needs root (apt-get install iptables)" >&2; exit 1; }
  echo "installing iptables from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends iptables >&2
fi
command -v iptables
