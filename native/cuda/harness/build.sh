#!/usr/bin/env bash
# Builds the standalone kernel harness (not part of the addon) into build/harness/flash_check,
# with the addon's CUDA flags; `--run` runs it afterwards (extra arguments go to the program).
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
out="$root/build/harness"
mkdir -p "$out"
# A private temp dir: concurrent nvcc runs on one machine have been seen to clash in /tmp.
export TMPDIR="$(mktemp -d)"
trap 'rm -rf "$TMPDIR"' EXIT
run=0
if [[ "${1:-}" == "--run" ]]; then run=1; shift; fi
nvcc -O3 --use_fast_math -std=c++17 --expt-relaxed-constexpr \
  -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90 \
  -Xptxas -v -I"$root/native" -o "$out/flash_check" \
  "$root/native/cuda/harness/flash_check.cu" "$root/native/cuda/flash_fwd.cu" "$root/native/cuda/fwd/kernel_hopper.cu" \
  "$root/native/cuda/flash_bwd.cu" "$root/native/cuda/bwd/kernel_hopper.cu" "$root/native/cuda/tensor_map.cc" "$root/native/launch_plan.cc" "$root/native/cuda/elementwise.cu" "$root/native/cuda/fill.cu" 2> "$out/ptxas.log" \
  || { cat "$out/ptxas.log"; exit 1; }
grep -E "error|warning" "$out/ptxas.log" || true
if [[ $run == 1 ]]; then exec "$out/flash_check" "$@"; fi
