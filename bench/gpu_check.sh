#!/usr/bin/env bash
# Issue 13's device run, in one go, on a machine with an NVIDIA GPU (sized for the lent H200:
# about 4 minutes of build and tests, then the benchmarks; the whole run stays under 10).
#
#   1. records the device (nvidia-smi, nvcc, python) into $OUT/device.txt;
#   2. builds colmena with COLMENA_CUDA=ON for this GPU's architecture (and cuFFT from the toolkit,
#      else from the nvidia-cufft wheel python3 has) into /tmp/colmena-site;
#   3. runs the GPU tests (tests/test_cuda_*.py: every operation against its CPU twin, and
#      train / backtest --device cuda against --device cpu; tests/test_build_info.py) with
#      COLMENA_REQUIRE_GPU=1 (a skip for want of a device is a failure) -> $OUT/junit-gpu.xml;
#   4. runs the GPU benchmarks (bench/bench_cuda.py, colmena next to torch CUDA, CuPy and the CPU
#      core) -> $OUT/bench-cuda.json, and the table with the roofline arithmetic
#      (bench/cuda_report.py) -> $OUT/bench-cuda.md;
#   5. writes the log of everything to $OUT/gpu-check.log and exits non-zero if a step failed.
#
# Run it from the repository root. On the lent machine (device tool), with the wheels that
# python3 there lacks prepared once by bench/gpu_wheels.sh:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Elsewhere: OUT=some/folder bash bench/gpu_check.sh (python3 with torch, CuPy, pytest,
# pytest-benchmark, hypothesis, scikit-build-core and pybind11; nvcc and cmake on PATH).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
export PYTHONUNBUFFERED=1
start=$(date +%s)
step() { echo; echo "==> [$(( $(date +%s) - start ))s] $*"; }
status=0
PY=${PYTHON:-python3}

step "device"
{
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version,compute_cap \
    --format=csv
  command -v nvcc && nvcc --version | tail -2
  "$PY" --version
  "$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.is_available())' || true
  "$PY" -c 'import cupy; print("cupy", cupy.__version__)' || true
  nproc
} | tee "$OUT/device.txt"
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
[ -n "$arch" ] || arch=90
export PATH="$PATH:/usr/local/cuda/bin"

step "the packages python3 lacks (wheels carried in .whl, from bench/gpu_wheels.sh)"
site=/tmp/colmena-deps
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl || status=1
fi
export PYTHONPATH="/tmp/colmena-site:$site${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import msgspec, numpy, pyarrow, click, rich, safetensors, pytest_benchmark, hypothesis' ||
  { echo "python3 lacks a package colmena's tests import (see above); run bench/gpu_wheels.sh" \
         "here and carry .whl"; exit 2; }

step "build with COLMENA_CUDA=ON for sm_$arch (one architecture: the build's minutes are device time)"
cufft_root=""
if ! compgen -G "/usr/local/cuda/lib64/libcufft.so*" >/dev/null; then
  cufft_root=$("$PY" - <<'EOF'
import importlib.util, pathlib
for name in ("nvidia.cu13", "nvidia.cufft", "nvidia"):
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        for inc in pathlib.Path(root).rglob("cufft.h"):
            if list(inc.parent.parent.glob("lib/libcufft.so*")):
                print(inc.parent.parent)
                raise SystemExit
EOF
  )
  echo "cuFFT outside the toolkit: ${cufft_root:-none found (the FFT path will be skipped)}"
fi
build_args=(
  -Cbuild-dir=/tmp/colmena-build
  -Ccmake.define.COLMENA_CUDA=ON
  "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=${arch}-real"
  -Ccmake.build-type=Release
)
[ -n "$cufft_root" ] && build_args+=("-Ccmake.define.COLMENA_CUFFT_ROOT=$cufft_root")
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
rm -rf /tmp/colmena-site
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/colmena-site \
     "${build_args[@]}" . ; then
  echo "the CUDA build failed"; exit 1
fi
(cd /tmp && "$PY" -c 'import colmena, json, sys; from colmena import _core
print(colmena.__file__); print(json.dumps(colmena.build_info(), indent=1))
print("cuFFT:", _core.cuda_has_cufft())
if not colmena.__file__.startswith("/tmp/colmena-site/"):
    sys.exit("python3 imports another colmena than the one just built: " + colmena.__file__)
if not _core.cuda_built():
    sys.exit("the build has no CUDA backend")') | tee -a "$OUT/device.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

step "GPU tests (every GPU operation against its CPU twin; the pipeline on --device cuda)"
COLMENA_REQUIRE_GPU=1 timeout 240 "$PY" -m pytest -p no:cacheprovider -q -W default::DeprecationWarning \
  tests/test_cuda_ops.py tests/test_cuda_emulation.py tests/test_cuda_pipeline.py \
  tests/test_build_info.py \
  --junitxml="$OUT/junit-gpu.xml" -rs || status=1

step "GPU benchmarks (colmena, torch CUDA, CuPy, the CPU core)"
COLMENA_REQUIRE_GPU=1 timeout 300 "$PY" -m pytest -p no:cacheprovider -q -W default::DeprecationWarning \
  -W ignore::pytest_benchmark.logger.PytestBenchmarkWarning \
  bench/bench_cuda.py --benchmark-only --benchmark-json="$OUT/bench-cuda.json" \
  --benchmark-min-rounds=3 --benchmark-max-time=2 --junitxml="$OUT/junit-bench.xml" -rs || status=1
if [ -s "$OUT/bench-cuda.json" ]; then
  "$PY" bench/cuda_report.py "$OUT/bench-cuda.json" | tee "$OUT/bench-cuda.md" || status=1
fi

step "done (status $status); files in $OUT"
ls -la "$OUT"
exit "$status"
