#!/usr/bin/env bash
# Prepares, on a machine with network, the wheels that the lent GPU machine's python3 (3.12, no
# network) lacks for colmena's GPU tests and benchmarks (bench/gpu_check.sh): msgspec. They land
# in .whl/ at the repository root, which git ignores (.git/info/exclude); carry ".whl" in the
# device call. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "msgspec>=0.18"
ls -la .whl
