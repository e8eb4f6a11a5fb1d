#!/usr/bin/env bash
# One call on a GPU machine (H100/H200; needs nvcc, CMake; no Node, no network):
# build, golden tests, random 2B-4T-shaped checks, benchmarks, the per-kernel profile, then a
# memcheck pass on the small tests. Writes everything under $OUT (or the first argument) and
# prints a block ready to paste into gpu-lambda/RESULTS.md. On an H200 (2026-11-27) it took about
# 100 s: build 15 s, bn_test 80 s (of it 17 s generating the synthetic model), memcheck 1 s; a
# machine's start adds ~30 s, so a session's 15 device minutes hold several runs. Since then the
# fast-numerics checks, more bench rows and the ncu pass were added, untimed. The script's own
# limits (bn_test 330 s; memcheck only before 400 s, ≤ 90 s; ncu only before 360 s, ≤ 80 + 2 × 70 s)
# keep it under ~580 s: give the call timeout_s 600.
#
# bn_test runs each GPU section (kernel checks, each opt-in kernel through the models, fast
# numerics, random checks, each bench configuration, the profile) in its own child process with a
# time limit: a device fault is sticky for a CUDA context, so in one process an opt-in kernel
# that faults would fail everything after it. A section that crashes, faults or hangs shows as a
# failed "<section>/process" check and the run goes on. The memcheck pass runs in one process
# (--no-isolate), so that compute-sanitizer sees every kernel.
#
#   bash gpu-lambda/test/run-on-gpu.sh [OUT_DIR]          (from the repository root)
#
# Files in OUT (8 at most): build.log (the machine's facts first) bn_test.log results.md
# results.json checks.md sanitizer.log ncu.txt RESULTS-snippet.md
#
# ncu.txt (when ncu reads the counters and time is left): Nsight Compute sections (speed of
# light, occupancy, launch, warp states, schedulers, memory) of the first batch-64 GEMMs and
# norms, of the exact batch-1 GEMVs and decode attention, and of the persistent layer
# (BN_PERSIST=layer), to show what the kernels wait on.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 2
OUT=${1:-${OUT:-$ROOT/gpu-lambda/test/build/out}}
mkdir -p "$OUT"
BUILD=gpu-lambda/test/build/cmake
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START )) s] $*"; }

{
  echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,persistence_mode --format=csv 2>&1
  (nvcc --version || /usr/local/cuda/bin/nvcc --version) 2>&1 | tail -2
  cmake --version 2>&1 | head -1
  echo "cpus: $(nproc)"
} > "$OUT/build.log"
cat "$OUT/build.log"

NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
if [ -z "$NVCC" ]; then stamp "nvcc not found"; exit 1; fi
stamp "configure + build (sm_90) with $NVCC"
if ! cmake -S gpu-lambda/test -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
       -DCMAKE_CUDA_COMPILER="$NVCC" >> "$OUT/build.log" 2>&1 ||
   ! cmake --build "$BUILD" -j"$(nproc)" >> "$OUT/build.log" 2>&1; then
  grep -E "error|Error" "$OUT/build.log" | head -40
  stamp "BUILD FAILED (see build.log)"
  exit 1
fi
# Register/spill summary of every kernel (ptxas -v).
grep -E "Compiling entry|spill|Used [0-9]+ registers" "$OUT/build.log" | sed 's/ptxas info *: //' > "$BUILD/ptxas.txt" || true
stamp "build done; spills: $(grep -c 'bytes spill stores' "$BUILD/ptxas.txt" 2>/dev/null) kernels reported, nonzero: $(grep -E '[1-9][0-9]* bytes spill stores' -c "$BUILD/ptxas.txt" 2>/dev/null)"

stamp "golden tests, random checks, benchmarks"
# BN_TEST_ONLY / BN_TEST_SKIP (optional): passed as --only / --skip, for a shorter rerun of some
# sections (e.g. BN_TEST_ONLY="bench/|profile" to time without rerunning the checks).
EXTRA=()
[ -n "${BN_TEST_ONLY:-}" ] && EXTRA+=(--only "$BN_TEST_ONLY")
[ -n "${BN_TEST_SKIP:-}" ] && EXTRA+=(--skip "$BN_TEST_SKIP")
timeout 330 "$BUILD/bn_test" --fixtures gpu-lambda/test/fixtures --bench --profile --out "$OUT" "${EXTRA[@]}" 2>&1 | tee "$OUT/bn_test.log"
RC=${PIPESTATUS[0]}
stamp "bn_test exit status $RC"

if [ -z "${BN_NO_MEMCHECK:-}" ] && command -v compute-sanitizer > /dev/null && [ $(( $(date +%s) - START )) -lt 400 ]; then
  stamp "compute-sanitizer memcheck on the fixture and model tests"
  timeout 90 compute-sanitizer --tool memcheck --print-limit 20 "$BUILD/bn_test" --fixtures gpu-lambda/test/fixtures \
    --no-random --no-isolate > "$OUT/sanitizer.log" 2>&1
  # API errors on purpose: `gpu/grid-sync refusals` asks for a cooperative launch too large (2
  # lines), `gpu/layer-chain refusals` for 280 KB of shared memory (cudaFuncSetAttribute).
  stamp "memcheck exit status $? ($(grep -c 'Invalid' "$OUT/sanitizer.log") invalid accesses; $(grep -c 'Program hit' "$OUT/sanitizer.log") API errors, of which $(grep -c 'Program hit cudaErrorCooperativeLaunchTooLarge' "$OUT/sanitizer.log") + $(grep -c 'Program hit cudaErrorInvalidValue.*cudaFuncSetAttribute' "$OUT/sanitizer.log") the refusal checks'; tail below)"
  tail -5 "$OUT/sanitizer.log"
else
  echo "compute-sanitizer skipped (missing or out of time)" > "$OUT/sanitizer.log"
fi

NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2> /dev/null | head -1 || true)
# Four passes of at most 80 + 70 + 70 + 60 s: started before 320 s, the script still ends by 600 s.
if [ -z "${BN_NO_NCU:-}" ] && [ -n "$NCU" ] && [ $(( $(date +%s) - START )) -lt 320 ]; then
  stamp "ncu ($NCU): batch-64 GEMMs and norms, then the batch-1 GEMVs and attention (exact, untuned)"
  SECTIONS="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis"
  {
    echo "### exact64: the first 8 GEMM / norm launches (layer 0 of a 64-token prefill, M = 64)"
    # shellcheck disable=SC2086
    # BN_AUTOTUNE=0: the tuner's own launches at engine creation would otherwise be the ones counted.
    BN_AUTOTUNE=0 timeout 80 "$NCU" --clock-control none -k regex:'gemm_kernel|gemm_pipe_kernel|norm_quant' -c 8 $SECTIONS \
      "$BUILD/bn_test" --profile-only --profile-part exact64 2>&1 | grep -v '^\[PASS\]'
    # exact1 prefills 256 tokens first (GEMMs, and 30 attention launches of 256 tokens: run 8's
    # ncu.txt held only those), then decodes: the GEMV filter skips nothing, attention skips 30.
    echo "### exact1: the first 8 GEMV launches (decode, M = 1, fused norm tails)"
    # shellcheck disable=SC2086
    BN_AUTOTUNE=0 timeout 70 "$NCU" --clock-control none -k regex:'gemv_kernel' -c 8 $SECTIONS \
      "$BUILD/bn_test" --profile-only --profile-part exact1 2>&1 | grep -v '^\[PASS\]'
    echo "### exact1: the first 2 decode attention launches (M = 1, sub-norm tail; the prefill's 30 skipped)"
    # shellcheck disable=SC2086
    BN_AUTOTUNE=0 timeout 70 "$NCU" --clock-control none -k regex:'attn_kernel' --launch-skip 30 -c 2 $SECTIONS \
      "$BUILD/bn_test" --profile-only --profile-part exact1 2>&1 | grep -v '^\[PASS\]'
    echo "### exact1 with BN_PERSIST=layer: the first 2 persistent layer launches (decode, M = 1, one per layer)"
    # MemoryWorkloadAnalysis_Tables: its shared-memory table counts bank conflicts (the chains read
    # their int8 row from shared memory in the rotated plane order, i2s_rot_plane: expected ~0).
    # shellcheck disable=SC2086
    BN_PERSIST=layer BN_AUTOTUNE=0 timeout 60 "$NCU" --clock-control none -k regex:'layer_chain_kernel' -c 2 $SECTIONS \
      --section MemoryWorkloadAnalysis_Tables \
      "$BUILD/bn_test" --profile-only --profile-part exact1 2>&1 | grep -v '^\[PASS\]'
  } > "$OUT/ncu.txt" 2>&1
  stamp "ncu done: $(grep -c 'Section: GPU Speed Of Light' "$OUT/ncu.txt") kernels reported (ncu.txt)"
else
  echo "ncu skipped (missing or out of time)" > "$OUT/ncu.txt"
fi

{
  if [ -f "$OUT/results.md" ]; then cat "$OUT/results.md"; else echo "(no results.md: the run stopped before the benchmarks)"; fi
  echo
  echo "<details><summary>Checks ($(grep -c '^\[PASS\]' "$OUT/bn_test.log") passed, $(grep -c '^\[FAIL\]' "$OUT/bn_test.log") failed)</summary>"
  echo
  [ -f "$OUT/checks.md" ] && cat "$OUT/checks.md"
  echo
  echo "</details>"
} > "$OUT/RESULTS-snippet.md"
echo
echo "================ RESULTS-snippet.md ================"
cat "$OUT/RESULTS-snippet.md"
stamp "done"
exit "$RC"
