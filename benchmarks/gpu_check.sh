#!/usr/bin/env bash
# One prepared check of the engine on a CUDA machine, in stages that each have their
# own time limit, so a slow stage cannot hide the results of the others:
#   1. the GPU-marked tests (`pytest -m gpu`: engine vs nn.Module + torch.optim.Adam on CUDA in
#      float64, eager and compiled, each with and without a CUDA graph; diverged models frozen
#      under a graph; the PINN loss and gradients on CUDA vs the CPU; batched L-BFGS on CUDA
#      against the CPU);
#   2. end to end: the default experiment with `device=cuda` (compile: auto, which leaves a run
#      this short eager and captures the step; then compiled and captured) and the PDE smoke
#      config (the same two ways), timed, with the run folders checked (device recorded, no
#      compile or capture error, checkpoints hold CPU tensors);
#   3. `aaf validate`'s memory estimate against torch.cuda.max_memory_allocated (M = 16, 1024);
#   4. benchmarks/bench_peers.py on the GPU: [1,20,1] ELU at M = 1024, 4096, 16384 and
#      [1,50,50,50,50,1] tanh at M = 256, 1024 (half fixed, half global n=10, float32, Adam,
#      300 points): per-model loop / aaf eager / aaf CUDA graph / aaf compiled (the whole step,
#      graph-captured) / JAX jit+scan (if JAX is there); one cold compile per cell.
# It installs nothing: run it from a checkout whose environment has aaf's dependencies (the
# repository's .venv is used when no virtual environment is active; otherwise `python`, or
# `python3` where there is no `python`, with the checkout on PYTHONPATH). About 4-5 minutes on
# one H100/H200 (the stages' limits add up to 10.5 minutes).
#
#     bash benchmarks/gpu_check.sh            # every stage
#     QUICK=1 bash benchmarks/gpu_check.sh    # fewer steps, no compiled column (~2 min)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
PY=${PYTHON:-$(command -v python || command -v python3)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX (the peer in stage 4) must not take 75% of the card before torch gets any.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
failed=()

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo
    echo "== $name (limit ${limit} s)"
    local tic=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "-- $name: rc $rc in $((SECONDS - tic)) s"
    [ "$rc" -eq 0 ] || failed+=("$name (rc $rc)")
}

"$PY" - <<'EOF' || exit 1
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device (torch " + torch.__version__ + ")")
props = torch.cuda.get_device_properties(0)
print(f"gpu_check: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
      f"{props.multi_processor_count} SMs, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"python {sys.version.split()[0]}")
EOF

start=$SECONDS
stage "1. GPU-marked tests" 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_engine_fast.py tests/test_pde.py tests/test_lbfgs.py

runs=$(mktemp -d)
e2e() {
    local tic
    for args in "--set device=cuda" "--set device=cuda --set train.compile=true" \
        "configs/pde_smoke.yaml --set device=cuda" \
        "configs/pde_smoke.yaml --set device=cuda --set train.compile=true"; do
        tic=$SECONDS
        # shellcheck disable=SC2086
        "$PY" -m aaf_cli run $args -q --runs-dir "$runs" || return 1
        echo "   aaf run $args: $((SECONDS - tic)) s wall"
    done
    "$PY" - "$runs" <<'EOF'
import json
import sys
from pathlib import Path

import torch

for folder in sorted(p for p in Path(sys.argv[1]).iterdir() if p.is_dir()):
    s = json.loads((folder / "summary.json").read_text())
    env = s["environment"]
    assert env["device"].startswith("cuda"), env["device"]
    for ckpt in (folder / "checkpoints").glob("*.pt"):
        payload = torch.load(ckpt, weights_only=True)  # no map_location: must already be CPU
        devices = {t.device.type for sd in payload["state_dicts"] for t in sd.values()}
        assert devices == {"cpu"}, (ckpt, devices)
    modes = {k: s[k] for k in s if k.startswith(("compile", "cuda_graph"))}
    assert not any(k.endswith("_error") for k in modes), (folder.name, modes)
    print(f"   {folder.name}: {env['device']}, {s['duration_s']:.1f} s end to end, training "
          f"{s['train_time_s']:.1f} s, {modes}, checkpoints hold CPU tensors")
    for c in s["comparisons"]:
        print(f"      {c['verdict']}")
EOF
}
export -f e2e
export PY runs
stage "2. end to end on CUDA" 150 bash -c e2e
rm -rf "$runs"

stage "3. memory estimate vs torch.cuda.max_memory_allocated" 45 \
    "$PY" -m benchmarks.bench_peers --device cuda --memory 16 1024

bench=(--device cuda --nets small deep --models 1024 4096 16384 --deep-models 256 1024
    --loop-models 4)
steps=(--steps 300 --deep-steps 100)
methods=(loop eager graphs compiled jax-scan)
# QUICK: no compiled column (a cold compile per cell, ~10 s each).
[ -n "${QUICK:-}" ] && steps=(--steps 100 --deep-steps 40) && methods=(loop eager graphs jax-scan)
stage "4. bench_peers on CUDA: loop / eager / graphs / compiled+graph / JAX" 200 \
    "$PY" -m benchmarks.bench_peers "${bench[@]}" "${steps[@]}" --rounds 2 \
    --methods "${methods[@]}"

stage "5. batched L-BFGS on a PINN ensemble against a per-model torch.optim.LBFGS loop" 90 \
    "$PY" -m benchmarks.bench_lbfgs --device cuda --models 64 --iterations 20 --repeats 2 \
    --no-compile

echo
echo "gpu_check: done in $((SECONDS - start)) s; ${#failed[@]} stage(s) failed${failed:+: ${failed[*]}}"
[ "${#failed[@]}" -eq 0 ]
