#!/usr/bin/env bash
# One call on the GPU machine: GPU tests, SASS check, Python reading our tensor files, and
# (with HARNESS=1) the kernel harness (build it here first: bash native/cuda/harness/build.sh;
# HARNESS_ARGS: its flags, e.g. --bwd, several runs split by '|'), (with KERNEL=1) the single-GPU kernel table beside
# sdpa_anchor.py's cuDNN rows when .device/anchors has it (KERNEL_ARGS: its flags, e.g. "--shape
# h=5 --deterministic"; ANCHOR=0 leaves the anchor out), (with BENCH=1) the README table per transport, (with SOLO="2 4")
# the README table of each world played rank by rank on GPU 0, transfers skipped (slowest rank per column),
# (with MMA=1) the GPU suites again on the mma.sync kernels every non-Hopper GPU runs (RFA_KERNELS=mma),
# (with SANITIZE="memcheck racecheck") the harness's checks under compute-sanitizer, (with SOAK=N) N
# forward+backward calls per rank of a ring sharing GPU 0 and its device-memory curve.
# Logs go to $OUT; a short summary prints last.
#   device run: source .device/env.sh && bash benchmark/device_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# The result a README-table log names goes to $OUT as soon as it exists (a call cut at the
# device's time limit keeps it), with its reading against the README-table issue's bar in $2.
keep_result() {
  local json; json=$(grep -o 'benchmark/results/[^ ]*\.json' "$1" | tail -1)
  [ -n "$json" ] || return 0
  cp "$json" "${json%.json}.svg" "${json%.json}-vs-python.svg" "$OUT/" 2>/dev/null
  node dist/benchmark/issue_targets.js "$json" > "$2"
}
nvidia-smi -L | tee "$OUT/gpus.txt"
[ "${TESTS:-1}" = 1 ] && { echo "--- test:gpu"; timeout ${TEST_TIMEOUT:-420} npm run test:gpu 2>&1 | tee "$OUT/test_gpu.log" | grep -vE "^\s*$" | tail -40; }
[ "${MMA:-0}" = 1 ] && { echo "--- test:gpu on the mma.sync kernels"; RFA_KERNELS=mma timeout ${TEST_TIMEOUT:-420} npm run test:gpu 2>&1 | tee "$OUT/test_gpu_mma.log" | grep -vE "^\s*$" | tail -20; }
for tool in ${SANITIZE:-}; do
  echo "--- compute-sanitizer $tool"
  timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool "$tool" --error-exitcode 9 build/harness/flash_check --no-timing --seed=1 > "$OUT/sanitize-$tool.log" 2>&1
  echo "exit $? ($tool)" | tee -a "$OUT/sanitize-$tool.log"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|ALL PASSED|FAIL" "$OUT/sanitize-$tool.log" | tail -3
done
[ -n "${SOAK:-}" ] && { echo "--- soak"; timeout ${SOAK_TIMEOUT:-300} node dist/test/soak.js "$SOAK" ${SOAK_WORLD:-2} 2>&1 | tee "$OUT/soak.log" | tail -4; }
echo "--- sass"; sass=$(cuobjdump --dump-sass build/Release/ring_flash_attn.node 2>/dev/null)
echo "HMMA instructions: $(grep -c HMMA <<<"$sass"), HGMMA: $(grep -c HGMMA <<<"$sass")" | tee "$OUT/sass.txt"
echo "--- python reads tensor files"
node dist/test/python/write_tensor_file.js /tmp/rfa_tensors.msgpack && python3 test/python/read_tensor_file.py /tmp/rfa_tensors.msgpack | tee "$OUT/python_read.txt"
if [ "${HARNESS:-0}" = 1 ]; then
  # HARNESS_ARGS may hold several runs, split by '|' (e.g. "--bwd --seed=1|--no-checks").
  IFS='|' read -ra harness_runs <<< "${HARNESS_ARGS:-}"; [ ${#harness_runs[@]} = 0 ] && harness_runs=("")
  for i in "${!harness_runs[@]}"; do
    echo "--- harness ${harness_runs[$i]}"
    timeout ${HARNESS_TIMEOUT:-120} build/harness/flash_check ${harness_runs[$i]} 2>&1 | tee "$OUT/harness-$i.log" | grep -E "FAIL|ALL PASSED|TIME"
  done
fi
if [ "${KERNEL:-0}" = 1 ]; then
  # cuDNN and FlashAttention-2 (PyTorch SDPA) on the same GPU just before, for ours ÷ cuDNN.
  anchor=()
  if [ "${ANCHOR:-1}" = 1 ] && [ -f .device/anchors/sdpa_anchor.py ]; then
    echo "--- sdpa anchor"
    timeout ${ANCHOR_TIMEOUT:-200} python3 .device/anchors/sdpa_anchor.py > "$OUT/anchor.log" 2>&1 && anchor=(--anchor "$OUT/anchor.log")
  fi
  echo "--- kernel"; timeout ${KERNEL_TIMEOUT:-240} node dist/benchmark/kernel.js ${anchor[@]+"${anchor[@]}"} ${KERNEL_ARGS:-} 2>&1 | tee "$OUT/kernel.log"
fi
# BENCH=1 runs the README table once per transport in TRANSPORTS (default: both).
if [ "${BENCH:-0}" = 1 ]; then
  for t in ${TRANSPORTS:-nccl copy-engine}; do
    echo "--- bench ($t)"; timeout ${BENCH_TIMEOUT:-300} npm run bench -- --transport $t ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-$t.log"
    # The README-table issue's bar (world 4: zigzag >= 95%, every cell above the Python project's).
    keep_result "$OUT/bench-$t.log" "$OUT/targets-$t.txt"
  done
fi
for w in ${SOLO:-}; do
  echo "--- solo $w"; timeout ${BENCH_TIMEOUT:-300} node dist/benchmark/readme_table.js --solo $w ${BENCH_ARGS:-} 2>&1 | tee "$OUT/solo$w.log"
  keep_result "$OUT/solo$w.log" "$OUT/targets-solo$w.txt"
done
echo "=== summary"; grep -sE "passed|failed" "$OUT/test_gpu.log" | tail -2; grep -sE "passed|failed" "$OUT/test_gpu_mma.log" | tail -1
for tool in ${SANITIZE:-}; do grep -hE "^exit|ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitize-$tool.log" | tail -3; done
[ -f "$OUT/soak.log" ] && grep -E "^soak" "$OUT/soak.log"
cat "$OUT/sass.txt"; grep -c PASS "$OUT/python_read.txt" 2>/dev/null
grep -sE "FAILED|ALL PASSED" "$OUT"/harness-*.log
[ -f "$OUT/kernel.log" ] && grep "^|" "$OUT/kernel.log"
for f in "$OUT"/bench-*.log; do [ -f "$f" ] && { echo "$f"; grep -E "^# |^## |^\| iter|^\|          \| \|" "$f"; }; done
for f in "$OUT"/targets-*.txt; do [ -f "$f" ] && { echo "$f"; grep -E "BELOW|verdict" "$f"; }; done
for w in ${SOLO:-}; do grep -E "^## |^\| iter|^\|          \| \|" "$OUT/solo$w.log"; done
