#!/usr/bin/env bash
# Copy the built-in profiles (app/sidecar_injector/builtin_profiles/*.yaml) into the Helm chart
# (charts/sidecar-injector/profiles/), which ships them in its profiles ConfigMap. Helm can
# only read files inside the chart, hence the copies; tests/test_chart.py fails while they
# differ. Removes chart copies whose built-in profile no longer exists.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source_dir="$root/app/sidecar_injector/builtin_profiles"
target_dir="$root/charts/sidecar-injector/profiles"

mkdir -p "$target_dir"
for copy in "$target_dir"/*.yaml; do
  [[ -e "$copy" ]] || continue
  if [[ ! -e "$source_dir/$(basename "$copy")" ]]; then
    rm -- "$copy"
    echo "removed $(basename "$copy")"
  fi
done
for profile in "$source_dir"/*.yaml; do
  if ! cmp -s "$profile" "$target_dir/$(basename "$profile")"; then
    cp -- "$profile" "$target_dir/"
    echo "copied $(basename "$profile")"
  fi
done
