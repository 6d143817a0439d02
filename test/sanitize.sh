#!/usr/bin/env bash
# The native code under AddressSanitizer and ThreadSanitizer: builds the addon CPU-only with each
# (into $SANITIZE_DIR, default a temporary folder), runs the CPU suites against it
# (RFA_ADDON, the sanitizer runtime preloaded into node) and fails on any report that involves
# the addon. Node itself is not instrumented, so ThreadSanitizer also reports races inside node
# and V8 (their own synchronisation is invisible to it); those are counted, not failed on.
# Usage: bash test/sanitize.sh [suite filter, as test/run.js takes it]
set -uo pipefail
cd "$(dirname "$0")/.."
dir="${SANITIZE_DIR:-$(mktemp -d)}"
mkdir -p "$dir"
filter="${1:-}"
status=0
for kind in address thread; do
  out="$dir/$kind"
  RFA_CUDA=OFF npx cmake-js compile --out "$out" \
    --CDCMAKE_CXX_FLAGS_RELEASE="-O1 -g -fno-omit-frame-pointer -fsanitize=$kind" \
    --CDCMAKE_SHARED_LINKER_FLAGS="-fsanitize=$kind" > "$out.build.log" 2>&1 || { echo "$kind: build failed ($out.build.log)"; exit 2; }
  if [ "$kind" = address ]; then lib=libasan.so; else lib=libtsan.so; fi
  runtime=$(gcc -print-file-name=$lib)
  log="$out.test.log"
  rm -f "$out".reports.*
  # Reports go to their own files (one per process), so the tests that read a child's stderr see only its output.
  RFA_ADDON="$out/Release/ring_flash_attn.node" LD_PRELOAD="$runtime" ASAN_OPTIONS="detect_leaks=0 log_path=$out.reports" \
    TSAN_OPTIONS="exitcode=0 log_path=$out.reports" node dist/test/run.js $filter > "$log" 2>&1
  summary=$(tail -n 1 "$log")
  python3 - "$kind" "$log" "$summary" "$out" <<'PY' || status=1
import glob, sys
kind, log, summary, out = sys.argv[1:]
text = "".join(open(f, errors="replace").read() for f in [log, *glob.glob(out + ".reports.*")])
banner = "ERROR: AddressSanitizer" if kind == "address" else "WARNING: ThreadSanitizer"
reports = [b for b in text.split("==================") if banner in b] if kind == "thread" else \
          [b for b in text.split("=================================================================") if banner in b]
ours = [r for r in reports if "ring_flash_attn.node" in r or "native/" in r]
print(f"{kind}: {summary}; {len(reports)} reports, {len(ours)} in the addon")
for r in ours[:5]:
    print(r[:4000])
sys.exit(1 if ours or " 0 failed" not in summary else 0)
PY
done
exit $status
