#!/usr/bin/env bash
# Builds kube-apiserver and etcd from their Go modules into a cache outside the repo.
# Idempotent: a second run with the binaries present does nothing.
# Prints the directory holding the binaries on its last line.
set -euo pipefail

K8S_VERSION="${TOLLGATE_K8S_VERSION:-v1.36.3}"
CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
OUT="$CACHE/control-plane/$K8S_VERSION"
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
# Two cores: one package compiled at a time keeps memory sane and leaves the other core usable.
export GOMAXPROCS="${GOMAXPROCS:-2}"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$OUT"
work="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

proxy="$(go env GOPROXY | cut -d, -f1)"
minor_patch="${K8S_VERSION#v1.}"           # 36.3
staging_version="v0.${minor_patch}"         # v0.36.3

echo "fetching k8s.io/kubernetes@$K8S_VERSION go.mod" >&2
curl -fsSL "$proxy/k8s.io/kubernetes/@v/$K8S_VERSION.mod" -o "$work/kubernetes.mod"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$work/kubernetes.mod")"
[[ -n "$etcd_version" ]] || { echo "cannot find the etcd version in kubernetes' go.mod" >&2; exit 1; }

# kube-apiserver: k8s.io/kubernetes lists its staging modules at v0.0.0 and replaces them with
# local paths, which a dependant cannot see, so the wrapper pins each to its published version.
mkdir -p "$work/k8s"
{
  echo "module tollgate.dev/controlplane/k8s"
  echo
  awk '$1=="go"{print; exit}' "$work/kubernetes.mod"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  grep -oE '^\s+k8s\.io/[A-Za-z0-9._-]+ v0\.0\.0$' "$work/kubernetes.mod" | awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}' | sort -u
  echo ")"
} >"$work/k8s/go.mod"
echo "building kube-apiserver $K8S_VERSION" >&2
(cd "$work/k8s" && go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >&2 \
  && go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor_patch%%.*}" \
       -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
mv "$OUT/kube-apiserver.tmp" "$OUT/kube-apiserver"

# etcd: the server module's own replaces point at sibling directories, so it too needs a wrapper.
mkdir -p "$work/etcd"
cat >"$work/etcd/go.mod" <<MOD
module tollgate.dev/controlplane/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $etcd_version
MOD
echo "building etcd $etcd_version" >&2
(cd "$work/etcd" && go get "go.etcd.io/etcd/server/v3@$etcd_version" >&2 \
  && go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
mv "$OUT/etcd.tmp" "$OUT/etcd"
echo "$OUT"
