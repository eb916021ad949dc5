#!/usr/bin/env bash
# Data-parallel scaling on a GPU machine (the `device` tool's, when a session is lent one): updates/s and
# env steps/s of one job on 1 and on all of the machine's GPUs, at size12m and size50m, CartPole-v1 (the
# env is cheap, so the numbers are the learner's). Budget: 4 jobs (8 with several GPUs) of 3,000 env steps,
# 1,000 of them prefill, about 250 updates each; aimed at under 5 minutes on one H100 with the install.
# Writes benchmarks/results/scaling_CartPole-v1_size12m_gpu.{json,md} and ..._size50m_gpu.* (and copies
# them to $OUT when the device tool sets it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python -c "import reverie" 2>/dev/null || pip install -q -e .
gpus=$(python -c "import torch; print(torch.cuda.device_count())")
[ "$gpus" -ge 1 ] || { echo "no GPU: torch.cuda.device_count() is 0" >&2; exit 2; }
nproc=(1); [ "$gpus" -gt 1 ] && nproc+=("$gpus")
python benchmarks/scaling.py --device cuda --preset size12m size50m --nproc "${nproc[@]}" --threads 4 \
    --steps 3000 --rounds 1 --tag gpu run.prefill=1000 run.train_ratio=64 batch_size=16
[ -n "${OUT:-}" ] && cp benchmarks/results/scaling_CartPole-v1_size*_gpu.* "$OUT"/ || true
