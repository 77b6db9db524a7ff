#!/usr/bin/env bash
# compute-sanitizer over the GPU tests of every CUDA kernel: the encoder ops, the decoder step ops, the C++
# decoder (graph capture and replay included). Run on the GPU machine after a build (scripts/gpu_run.sh):
#   scripts/sanitize.sh [tool ...]          tools: memcheck racecheck synccheck initcheck (default: all four)
# Each (tool, test file) pair is its own process, JOBS of them at a time (default: all 28 at once; the
# sanitizers are bound by the host's cores, not the GPU). Each pair's verdict is appended to
# $OUT/sanitizer-summary.txt as it ends, so a run cut short still reports the pairs it finished; the logs go
# to $LOGS and, at the end, into $OUT/sanitizer-logs.tar.gz. Env: JOBS, SANITIZE_K (a pytest -k expression to
# narrow the tests), SANITIZE_TIMEOUT (seconds per pair; one cut off is reported as such, not as clean), OUT,
# LOGS (default /tmp/fastwhisper-sanitizer).
# Exit status 1 if any tool reports an error or any pair did not finish. PyTorch's caching allocator is turned
# off so that memcheck sees each allocation's real bounds.
set -uo pipefail
export PATH=$PATH:/usr/local/cuda/bin
command -v compute-sanitizer >/dev/null || { echo "compute-sanitizer not found (it comes with the CUDA toolkit)"; exit 1; }
OUT=${OUT:-/tmp/fastwhisper-out}
LOGS=${LOGS:-/tmp/fastwhisper-sanitizer}
mkdir -p "$OUT" "$LOGS"
: > "$OUT/sanitizer-summary.txt"
TESTS="tests/test_ops.py tests/test_encoder.py tests/test_encoder_graphs.py tests/test_linear_gelu_gemm.py
       tests/test_decoder_step_ops.py tests/test_decoder_attention_greedy_ops.py tests/test_cpp_decoder.py"
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(memcheck racecheck synccheck initcheck)
export OUT LOGS SANITIZE_K=${SANITIZE_K:-} SANITIZE_TIMEOUT=${SANITIZE_TIMEOUT:-3600}

one_pair() {  # tool test_file: sanitizer log and pytest log in $LOGS, one status line in the summary
  local tool=$1 file=$2 name
  name=$(basename "$file" .py)
  local log="$LOGS/$tool-$name.log" start rc
  start=$(date +%s)
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$SANITIZE_TIMEOUT" compute-sanitizer --tool "$tool" \
    --error-exitcode 99 --print-limit 20 --target-processes all --log-file "$log" \
    python3 -m pytest "$file" -m gpu -q -p no:cacheprovider ${SANITIZE_K:+-k "$SANITIZE_K"} \
    >"$LOGS/$tool-$name.pytest.log" 2>&1
  rc=$?
  local verdict=clean
  [ "$rc" -eq 124 ] && verdict="cut off after ${SANITIZE_TIMEOUT} s"
  [ "$rc" -eq 99 ] && verdict="SANITIZER ERRORS"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 99 ] && [ "$rc" -ne 124 ] && verdict="tests failed (exit $rc)"
  echo "$tool $name: $verdict in $(( $(date +%s) - start )) s; $(tail -1 "$LOGS/$tool-$name.pytest.log");" \
       "$(grep -h "ERROR SUMMARY" "$log" 2>/dev/null | sort | uniq -c | tr '\n' ' ')" \
       >> "$OUT/sanitizer-summary.txt"
}
export -f one_pair

for tool in "${tools[@]}"; do for file in $TESTS; do echo "$tool $file"; done; done |
  xargs -P "${JOBS:-28}" -L 1 bash -c 'one_pair "$0" "$1"'
tar -czf "$OUT/sanitizer-logs.tar.gz" -C "$LOGS" .
sort "$OUT/sanitizer-summary.txt"
! grep -qv ": clean in" "$OUT/sanitizer-summary.txt"
