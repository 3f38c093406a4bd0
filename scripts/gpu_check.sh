#!/usr/bin/env bash
# The checks that need a GPU, as one command on a lent device (`bash scripts/gpu_check.sh`, a few minutes on one GPU):
#   1. tests/test_gpu.py (the CUDA paths of the optimizers and the trainer);
#   2. scripts/bench_optim.py --device cuda (the SF optimizers against fused AdamW and the reference packages);
#   3. scripts/bench_gpt.py on task=gpt2_small, bf16, torch.compile, against transformers' GPT-2 and, when $NANOGPT
#      names a directory holding nanoGPT's model.py (a checkout of karpathy/nanoGPT, not part of sfbench), nanoGPT's;
#   4. the main command, `python -m sfbench`, on CUDA (its offline default: distillation, SF-AdamW);
# then one table: each step, its exit status, its seconds and its headline. Full outputs under $OUT when set (the
# device tool's folder), else gpu_check_out/. `--dry-run` runs the same steps on the CPU, shortened (the suite's
# tests/test_gpu_check.py runs it). Never part of CI.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
if [ "${1:-}" = "--dry-run" ]; then
    dev=cpu; optim=(--rounds 2 --only "AdamW (fused)" --no-reference --no-wrapper); gpt=(--rounds 2 --block 1 --warmup 1)
    main=(trainer.steps=5 task.teacher.steps=20)
else
    dev=cuda; optim=(--rounds 30); main=()
    gpt=(--rounds 20 --precision bf16 --compile task=gpt2_small task.data.tokenizer=bytes)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
fi
[ -n "${NANOGPT:-}" ] && gpt+=(--nanogpt "$NANOGPT")

rows=()
step() {        # step NAME HEADLINE-PATTERN COMMAND…: run it, keep its output, add a row to the table
    local name=$1 pattern=$2; shift 2
    local start=$SECONDS
    "$@" > "$out/$name.txt" 2>&1
    local rc=$?
    local headline
    headline=$(grep -E "$pattern" "$out/$name.txt" | tail -n 1 | cut -c1-110)
    rows+=("| $name | $rc | $((SECONDS - start)) | ${headline:-$(tail -n 1 "$out/$name.txt" | cut -c1-110)} |")
    echo "gpu_check: $name: exit $rc after $((SECONDS - start)) s ($out/$name.txt)"
}

step test_gpu "passed|skipped|failed" python -m pytest tests/test_gpu.py -m gpu -q -p no:cacheprovider
step bench_optim "^\| SFAdamW \(fused\) ≤" python scripts/bench_optim.py --device "$dev" "${optim[@]}" \
    --json "$out/bench_optim.json"
step bench_gpt "steps/s, per-round" python scripts/bench_gpt.py --device "$dev" "${gpt[@]}"
step main_command "completed|diverged|error" python -m sfbench trainer.device="$dev" logger=none \
    hydra.run.dir="$out/main_run" "${main[@]}"

{
    echo "| step | exit | seconds | headline |"
    echo "|---|---:|---:|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$out/summary.md"
! grep -q -E '^\| [a-z_]+ \| [1-9]' "$out/summary.md"
