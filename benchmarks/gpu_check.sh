#!/usr/bin/env bash
# One prepared check of the engine on a CUDA machine (issue 13), in two parts:
#   1. the GPU-marked tests (`pytest -m gpu`: engine vs nn.Module + torch.optim.Adam on CUDA in
#      float64, eager and CUDA-graph captured; diverged models frozen under a graph);
#   2. benchmarks/bench_peers.py on the GPU: [1,20,1] ELU at M = 1024, 4096, 16384 and
#      [1,50,50,50,50,1] tanh at M = 256, 1024 (half fixed, half global n=10, float32, Adam,
#      300 points), per-model loop / aaf eager / aaf compile / aaf CUDA graphs, as one table.
# It installs nothing: run it from a checkout whose environment has `pip install -e '.[dev]'`
# (the repository's .venv is used when no virtual environment is active). Budget: about 5-8
# minutes on one H100 (most of it the cold torch.compile of five cells).
#
#     bash benchmarks/gpu_check.sh            # both parts
#     QUICK=1 bash benchmarks/gpu_check.sh    # fewer steps, no compiled column (~2 min)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi

python - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (torch " + torch.__version__ + ")")
props = torch.cuda.get_device_properties(0)
print(f"gpu_check: {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}")
EOF

start=$(date +%s)
echo
echo "== 1. GPU-marked tests (pytest -m gpu)"
timeout 240 python -m pytest -q -m gpu -p no:cacheprovider tests

echo
echo "== 2. bench_peers on CUDA"
methods=(loop eager compiled graphs)
steps=(--steps 300 --deep-steps 100 --rounds 2)
if [ -n "${QUICK:-}" ]; then
    methods=(loop eager graphs)
    steps=(--steps 100 --deep-steps 40 --rounds 2)
fi
timeout 480 python -m benchmarks.bench_peers --device cuda \
    --nets small deep --models 1024 4096 16384 --deep-models 256 1024 \
    --methods "${methods[@]}" "${steps[@]}" --loop-models 4
echo
echo "gpu_check: done in $(( $(date +%s) - start )) s"
