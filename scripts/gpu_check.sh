#!/usr/bin/env bash
# The checks that need a GPU, as one command for a lent device (`bash scripts/gpu_check.sh`): the CUDA tests, then the
# optimizer benchmark at 72 and 144 tensors. Never part of CI. Results under $OUT when set (the device tool's folder).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -m pytest tests/test_gpu.py -m "gpu" -q -p no:cacheprovider 2>&1 | tee "$out/test_gpu.txt"
python scripts/bench_optim.py --device cuda --rounds 30 --json "$out/bench_72.json" 2>&1 | tee "$out/bench_72.txt"
python scripts/bench_optim.py --device cuda --rounds 30 --layers 12 --width 1024 --no-reference \
    --json "$out/bench_144.json" 2>&1 | tee "$out/bench_144.txt"
