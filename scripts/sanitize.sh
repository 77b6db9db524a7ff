#!/usr/bin/env bash
# compute-sanitizer over the GPU tests of every CUDA kernel: the encoder ops, the decoder step ops, the C++
# decoder (graph capture and replay included). Run on the GPU machine after a build (scripts/gpu_run.sh):
#   scripts/sanitize.sh [tool ...]          tools: memcheck racecheck synccheck initcheck (default: all four)
# Env: SANITIZE_K (a pytest -k expression to narrow the tests), OUT (logs). Exit status 1 if any tool reports
# an error. PyTorch's caching allocator is turned off so that memcheck sees each allocation's real bounds.
set -uo pipefail
OUT=${OUT:-/tmp/fastwhisper-out}
mkdir -p "$OUT"
TESTS="tests/test_ops.py tests/test_encoder.py tests/test_encoder_graphs.py tests/test_linear_gelu_gemm.py
       tests/test_decoder_step_ops.py tests/test_decoder_attention_greedy_ops.py tests/test_cpp_decoder.py"
tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(memcheck racecheck synccheck initcheck)
failed=0
for tool in "${tools[@]}"; do
  log="$OUT/sanitizer-$tool.log"
  start=$(date +%s)
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
    --target-processes all --log-file "$log" \
    python3 -m pytest $TESTS -m gpu -q -p no:cacheprovider ${SANITIZE_K:+-k "$SANITIZE_K"} \
    >"$OUT/sanitizer-$tool.pytest.log" 2>&1
  rc=$?
  summary=$(grep -h "ERROR SUMMARY" "$log" | sort | uniq -c | tr '\n' ';')
  echo "$tool: exit $rc in $(( $(date +%s) - start )) s; $(tail -1 "$OUT/sanitizer-$tool.pytest.log"); $summary"
  [ "$rc" -eq 0 ] || failed=1
done
exit "$failed"
