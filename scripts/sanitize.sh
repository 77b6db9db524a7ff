#!/usr/bin/env bash
# compute-sanitizer over the GPU tests of every CUDA kernel: the encoder ops, the decoder step ops, the C++
# decoder (graph capture and replay included). Run on the GPU machine after a build (scripts/gpu_run.sh):
#   scripts/sanitize.sh [tool ...]          tools: memcheck racecheck synccheck initcheck (default: all four)
# Each (tool, test file, selection) pair below is its own process, JOBS at a time (default: the CPU count; the
# sanitizers are bound by the host's cores, not the GPU). Each pair's verdict is appended to
# $OUT/sanitizer-summary.txt as it ends, so a run cut short still reports the pairs it finished; the logs go to
# $LOGS and, at the end, into $OUT/sanitizer-logs.tar.gz. Env: JOBS, SANITIZE_TIMEOUT (seconds per pair; one
# cut off is reported as such, not as clean), OUT, LOGS (default /tmp/fastwhisper-sanitizer).
# Exit status 1 if any tool reports an error or any pair did not finish.
#
# How the pairs are chosen:
# - memcheck and initcheck run the op tests that capture no CUDA graph with PyTorch's caching allocator off
#   ("nocache"), so that each tensor is its own allocation with its real bounds. A graph cannot be captured
#   without the caching allocator, so the tests that capture (encoder graphs, the C++ decoder, the session's
#   step ops) run with it on.
# - racecheck and synccheck check shared memory and barriers only: the caching allocator stays on, and only
#   fastwhisper's kernels are instrumented (cuDNN's and cuBLASLt's warp-specialized kernels are not ours and
#   overflow synccheck's barrier tracking).
# - Tests that add no kernel (opcheck, torch.compile), encoder sizes past base (the same kernels) and tests that
#   read kernel names from torch.profiler (which records no kernels under a sanitizer) are left out.
set -uo pipefail
export PATH=$PATH:/usr/local/cuda/bin
command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer not found (it comes with the CUDA toolkit)"; exit 1; }
OUT=${OUT:-/tmp/fastwhisper-out}
LOGS=${LOGS:-/tmp/fastwhisper-sanitizer}
mkdir -p "$OUT" "$LOGS"
: > "$OUT/sanitizer-summary.txt"
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(memcheck racecheck synccheck initcheck)
export OUT LOGS SANITIZE_TIMEOUT=${SANITIZE_TIMEOUT:-3600}

NO_NAMES="not takes_cutlass and not encoder_at_batch_8 and not tensor_core_kernel"
# allocator | test file | pytest -k selection
MEMORY_PAIRS="nocache|tests/test_ops.py|not opcheck and not compile
nocache|tests/test_decoder_attention_greedy_ops.py|
nocache|tests/test_decoder_step_ops.py|not session_step_ops_cuda and $NO_NAMES
cache|tests/test_decoder_step_ops.py|session_step_ops_cuda
cache|tests/test_encoder.py|tiny or base
cache|tests/test_encoder_graphs.py|
cache|tests/test_linear_gelu_gemm.py|$NO_NAMES
cache|tests/test_cpp_decoder.py|cuda and not graph_capture_fails"
KERNEL_PAIRS="cache|tests/test_ops.py|not opcheck and not compile
cache|tests/test_decoder_attention_greedy_ops.py|
cache|tests/test_decoder_step_ops.py|$NO_NAMES
cache|tests/test_linear_gelu_gemm.py|$NO_NAMES"

one_pair() {  # tool allocator test_file selection: logs in $LOGS, one status line in the summary
  local tool=$1 allocator=$2 file=$3 selection=$4 name start rc
  name="$tool-$(basename "$file" .py)-$allocator${selection:+-$(echo "$selection" | md5sum | cut -c1-6)}"
  local log="$LOGS/$name.log" plog="$LOGS/$name.pytest.log"
  local args=(--tool "$tool" --error-exitcode 99 --print-limit 1000 --target-processes all --log-file "$log")
  case $tool in
    racecheck) args+=(--kernel-name kns=fastwhisper) ;;
    synccheck) args+=(--kernel-name kns=fastwhisper --num-cuda-barriers 1024) ;;
  esac
  local env=()
  [ "$allocator" = nocache ] && env=(PYTORCH_NO_CUDA_MEMORY_CACHING=1)
  start=$(date +%s)
  env "${env[@]}" timeout "$SANITIZE_TIMEOUT" compute-sanitizer "${args[@]}" \
    python3 -m pytest "$file" -m gpu -q -p no:cacheprovider --durations=10 ${selection:+-k "$selection"} >"$plog" 2>&1
  rc=$?
  local verdict=clean
  [ "$rc" -eq 124 ] && verdict="cut off after ${SANITIZE_TIMEOUT} s"
  [ "$rc" -eq 99 ] && verdict="SANITIZER ERRORS"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 99 ] && [ "$rc" -ne 124 ] && verdict="tests failed (exit $rc)"
  local tests aborted
  tests=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed)" "$plog" | tail -1)
  aborted=$(grep -m1 -A3 "Fatal Python error" "$plog" | grep -m1 "tests/test_" | sed 's/^ *//')
  echo "$name [${selection:-all}]: $verdict in $(( $(date +%s) - start )) s; ${tests:-no pytest summary}" \
       "${aborted:+; aborted in $aborted}; $(grep -h "ERROR SUMMARY" "$log" 2>/dev/null | sort | uniq -c | tr '\n' ' ')" \
       >> "$OUT/sanitizer-summary.txt"
}
export -f one_pair

for tool in "${tools[@]}"; do
  case $tool in memcheck|initcheck) pairs=$MEMORY_PAIRS ;; *) pairs=$KERNEL_PAIRS ;; esac
  while IFS='|' read -r allocator file selection; do printf '%s\0%s\0%s\0%s\0' "$tool" "$allocator" "$file" "$selection"; done <<< "$pairs"
done | xargs -0 -n 4 -P "${JOBS:-$(nproc)}" bash -c 'one_pair "$0" "$1" "$2" "$3"'
tar -czf "$OUT/sanitizer-logs.tar.gz" -C "$LOGS" .
sort "$OUT/sanitizer-summary.txt"
! grep -qv ": clean in" "$OUT/sanitizer-summary.txt"
