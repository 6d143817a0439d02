#!/usr/bin/env bash
# One GPU call for the kernel work: the harness's checks against fp64 (every forward kernel; then
# the varlen configs on the Hopper forward, flash_check --hopper-varlen),
# its timings, the SASS facts of the Hopper forward (HGMMA count, local memory), and PyTorch
# SDPA's cuDNN and FlashAttention-2 at the same shapes on the same GPU. Build here first
# (bash native/cuda/harness/build.sh; ../shared/device/pack for the anchors), then on the device:
#   bash native/cuda/harness/device_run.sh        (CHECK=0 skips the checks, VARLEN=0 the varlen
#                                                   ones, TIMING=0 the timings,
#                                                   ANCHOR=0 the SDPA anchors, ANCHOR_SHAPES="s=8192 h=5,..."
#                                                   picks its shapes; logs go to $OUT)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bin=build/harness/flash_check
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
if [ "${CHECK:-1}" = 1 ]; then
  timeout ${CHECK_TIMEOUT:-240} $bin --no-timing --seed=${SEED:-1} > "$OUT/check.log" 2>&1
  echo "check exit $?"; grep -E "FAIL|ALL PASSED|FAILED" "$OUT/check.log" | head -40
fi
if [ "${VARLEN:-1}" = 1 ]; then
  timeout ${CHECK_TIMEOUT:-240} $bin --hopper-varlen --seed=${SEED:-1} > "$OUT/varlen.log" 2>&1
  echo "varlen check exit $?"; grep -E "FAIL|ALL PASSED|FAILED" "$OUT/varlen.log" | head -20
fi
if [ "${SASS:-1}" = 1 ]; then
  cuobjdump --dump-sass $bin > /tmp/sass.txt 2>/dev/null
  awk '/Function : .*flash_fwd_hopper_kernel/{f=$3} /Function : /{if($3!~/hopper/)f=""} f!=""&&/HGMMA/{h[f]++} f!=""&&/(LDL|STL)/{l[f]++} END{for(k in h) print "SASS", k, "HGMMA", h[k], "LDL/STL", l[k]+0}' /tmp/sass.txt | sed 's/_ZN3rfa4cuda[^ ]*flash_fwd_hopper_kernelINS0_15FwdHopperTraitsILi/hopper<d/' | tee "$OUT/sass.txt"
fi
if [ "${TIMING:-1}" = 1 ]; then
  timeout ${TIMING_TIMEOUT:-240} $bin --no-checks --seed=2 ${TIMING_ARGS:-} 2>&1 | grep -E "^TIME" | tee "$OUT/timing.log"
fi
if [ "${ANCHOR:-1}" = 1 ] && [ -f .device/anchors/sdpa_anchor.py ]; then
  timeout ${ANCHOR_TIMEOUT:-240} python3 .device/anchors/sdpa_anchor.py ${ANCHOR_SHAPES:+"--shapes=$ANCHOR_SHAPES"} 2>&1 | tee "$OUT/anchor.log" | tail -3
fi
