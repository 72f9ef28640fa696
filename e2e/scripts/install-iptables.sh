#!/usr/bin/env bash
# Installs Debian's iptables (iptables and ip6tables, nf_tables backend) when it is missing:
# transparent mode's test runs the real rules in a network namespace of its own.
# Prints the path of iptables on its last line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
apt_install_missing "iptables ip6tables" iptables
command -v iptables
