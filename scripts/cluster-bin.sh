#!/usr/bin/env bash
# Build the control plane the tests/cluster tier runs: etcd, kube-apiserver,
# kube-controller-manager and kubectl of the Kubernetes release pinned in
# scripts/controlplane/go.mod, from source, into .cluster/bin/.
#
#   scripts/cluster-bin.sh          # build when the pins changed (else: nothing to do)
#   scripts/cluster-bin.sh --if-possible  # the same, but without Go (and not on CI) only say
#                                         # so: the cluster tests then skip with that reason
#
# One `go build` for the four binaries, so the packages they share compile once;
# -trimpath and stripped (-s -w); the version is stamped in as the release's own build
# does (kubectl version, /version and Helm's kubeVersion checks read it). The build is
# redone only when go.mod, go.sum, the etcd entry point or this script change: their
# sha256 is kept in .cluster/bin/.pins.
#
# KUBEBUILDER_ASSETS (the envtest convention): a folder of prebuilt binaries. Those it
# has are used as they are; the ones it lacks (envtest's assets have no
# kube-controller-manager) are built here. The tests find each binary the same way
# (tests/cluster/controlplane.py).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module="$root/scripts/controlplane"
out="$root/.cluster/bin"
binaries=(etcd kube-apiserver kube-controller-manager kubectl)

# The Go that builds it. go.mod says `go 1.26.0`: the machine's Go 1.26 builds it as it is.
# A release that needs a newer Go names it here (the one toolchain the module proxy serves
# for this project's machines is go1.27.3) - and then in every script that builds.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

if_possible=0
[[ "${1:-}" == "--if-possible" ]] && if_possible=1

missing=()
for name in "${binaries[@]}"; do
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$name" ]]; then
    echo "cluster-bin: $name from KUBEBUILDER_ASSETS ($KUBEBUILDER_ASSETS)" >&2
  else
    missing+=("$name")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v go >/dev/null 2>&1; then
  if [[ $if_possible -eq 1 && "${CI:-}" != "true" ]]; then
    echo "cluster-bin: no Go toolchain: the tests/cluster tier will skip (make cluster-bin says what it needs)" >&2
    exit 0
  fi
  echo "cluster-bin: no Go toolchain on PATH: install Go >= 1.26, or set KUBEBUILDER_ASSETS to a folder" \
    "with etcd, kube-apiserver, kube-controller-manager and kubectl" >&2
  exit 2
fi

release="$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$module/go.mod")"
if [[ ! "$release" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
  echo "cluster-bin: no k8s.io/kubernetes vX.Y.Z requirement in $module/go.mod" >&2
  exit 2
fi
major="${BASH_REMATCH[1]}"
minor="${BASH_REMATCH[2]}"

pins="$(cat "$module/go.mod" "$module/go.sum" "$module/etcd/main.go" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
stamp="$out/.pins"
built=1
for name in "${missing[@]}"; do [[ -x "$out/$name" ]] || built=0; done
if [[ $built -eq 1 && -f "$stamp" && "$(cat "$stamp")" == "$pins" ]]; then
  exit 0
fi

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

packages=()
for name in "${missing[@]}"; do
  case "$name" in
    etcd) packages+=("./etcd") ;;
    *) packages+=("k8s.io/kubernetes/cmd/$name") ;;
  esac
done

mkdir -p "$out"
rm -f "$stamp"
echo "cluster-bin: building ${missing[*]} of Kubernetes $release with $(go version | cut -d' ' -f3)" \
  "(first build ~8 min on 2 cores; then the Go build cache makes it seconds)" >&2
start=$SECONDS
(cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$out/" "${packages[@]}")
echo "$pins" >"$stamp"
echo "cluster-bin: built in $((SECONDS - start)) s into $out" >&2
