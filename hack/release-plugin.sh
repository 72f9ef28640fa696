#!/usr/bin/env bash
# Packages `kubectl-approve` for krew: builds the plugin (release profile), archives it for each
# platform it can build, and writes the krew manifest with every archive's sha256.
#   hack/release-plugin.sh            dist/kubectl-approve_v<version>_<os>_<arch>.tar.gz and
#                                     plugins/approve.yaml (commit it with the release)
#   hack/release-plugin.sh --out DIR  both into DIR instead
# Platforms: the host's, and those of the Rust targets installed below (`rustup target add`).
#   TOLLGATE_PLUGIN_BINARY=PATH  package PATH as the host's build instead of building (the tests)
#   TOLLGATE_RELEASE_URL=URL     where the archives are published (default: the workspace's
#                                `repository`/releases/download/v<version>)
set -euo pipefail
cd "$(dirname "$0")/.."

out=""
if [[ "${1:-}" == "--out" ]]; then
  out="${2:?--out needs a directory}"
fi
archives="${out:-dist}"
manifest="${out:-plugins}/approve.yaml"
mkdir -p "$archives" "$(dirname "$manifest")"

field() { sed -n "/^\[workspace.package\]/,/^\[/s/^$1 = \"\(.*\)\"/\1/p" Cargo.toml; }
version="v$(field version)"
url="${TOLLGATE_RELEASE_URL:-$(field repository)/releases/download/$version}"

# <rust target> <krew os> <krew arch>
targets=(
  "x86_64-unknown-linux-gnu linux amd64"
  "aarch64-unknown-linux-gnu linux arm64"
  "x86_64-apple-darwin darwin amd64"
  "aarch64-apple-darwin darwin arm64"
)
host="$(rustc -vV | sed -n 's/^host: //p')"
installed="$(rustup target list --installed 2>/dev/null || echo "$host")"

platforms=""
for t in "${targets[@]}"; do
  read -r target os arch <<<"$t"
  grep -qx "$target" <<<"$installed" || [[ "$target" == "$host" ]] || continue
  if [[ "$target" == "$host" && -n "${TOLLGATE_PLUGIN_BINARY:-}" ]]; then
    binary="$TOLLGATE_PLUGIN_BINARY"
  else
    cargo build --quiet --locked --release -p tollgate-cli --bin kubectl-approve --target "$target" >&2
    binary="target/$target/release/kubectl-approve"
  fi
  name="kubectl-approve_${version}_${os}_${arch}.tar.gz"
  stage="$(mktemp -d)"
  cp "$binary" "$stage/kubectl-approve"
  # Reproducible archives: fixed order, owner and time.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -czf "$archives/$name" kubectl-approve
  rm -rf "$stage"
  sha="$(sha256sum "$archives/$name" | cut -d' ' -f1)"
  platforms+="  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $url/$name
    sha256: $sha
    bin: kubectl-approve
    files:
      - from: kubectl-approve
        to: .
"
  echo "packaged $archives/$name ($sha)" >&2
done
[[ -n "$platforms" ]] || { echo "no platform could be built" >&2; exit 1; }

cat > "$manifest" <<YAML
# Written by hack/release-plugin.sh for $version: the krew manifest of kubectl-approve.
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: approve
spec:
  version: $version
  homepage: $(field repository)
  shortDescription: Decide Tollgate approval requests held for AI agents
  description: |
    Tollgate puts AI agents' tool and model calls under policy; a call a policy
    holds for a person becomes an ApprovalRequest. This plugin lists, shows,
    watches and decides them (approve, or deny with a reason), from the terminal
    or from a page in your browser (kubectl approve ui) that acts with your own
    kubeconfig credentials. Every decision goes through the API server's
    admission chain, as anything else you do with kubectl.
  caveats: |
    Deciding needs the tollgate-approver ClusterRole (bound by your cluster
    admin) and your name in the request's ApprovalWorkflow.
      kubectl approve list -A
      kubectl approve ui
    Completion in kubectl's own (kubectl approve <TAB>): link the plugin under
    the name kubectl looks for, next to it on your PATH:
      ln -s kubectl-approve "$(dirname "$(command -v kubectl-approve)")/kubectl_complete-approve"
  platforms:
$platforms
YAML
sed -i -e '${/^$/d}' "$manifest"
echo "$manifest"
