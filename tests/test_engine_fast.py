"""The fast engine step: one flat multi-row update, host-side shortcuts, the device-side
step a CUDA graph replays, and what they must keep (exact freezing, the reference, input
derivatives for the physics-informed path). GPU-marked tests run on CUDA only."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import TypeAdapter

from aaf_cli import train as train_module
from aaf_cli.config import FixedVariant, GlobalVariant, TrainConfig, Variant
from aaf_cli.errors import ConfigError
from aaf_cli.models import Ensemble, Groups, ModelSpec
from aaf_cli.train import StackedAdam, StackedSGD, make_optimizer, train

from .reference import reference_run

F64 = torch.float64
FIXED = FixedVariant(kind="fixed")
ADAPTIVE = GlobalVariant(kind="global", name="adaptive", n=10.0)
KINDS = ["fixed", "global", "layer", "neuron", "rowdy", "prelu", "swish", "rational"]


def variant(kind: str) -> Any:
    return TypeAdapter(Variant).validate_python({"kind": kind})


def mixed(
    layers: list[int],
    act: str,
    seeds: int,
    dtype: torch.dtype = F64,
    device: str = "cpu",
    first_seed: int = 0,
) -> Groups:
    chosen = range(first_seed, first_seed + seeds)
    fixed = [ModelSpec("fixed", s, "fixed", FIXED) for s in chosen]
    adaptive = [ModelSpec("adaptive", s, "global", ADAPTIVE) for s in chosen]
    return Groups(
        [
            Ensemble(layers, "fixed", act, fixed, dtype=dtype, device=device),
            Ensemble(layers, "global", act, adaptive, dtype=dtype, device=device),
        ]
    )


def frozen_row_groups(layers: list[int], act: str = "tanh") -> Groups:
    """Two fixed models (the second with learning rate 0: a frozen row) and two L-LAAF models
    with slope recovery, in float64: the compiled-step tests' structure."""
    recovery = TypeAdapter(Variant).validate_python(
        {"kind": "layer", "n": 5.0, "slope_recovery": {"weight": 1.0}}
    )
    fixed = [ModelSpec("fixed", 0, "fixed", FIXED), ModelSpec("frozen", 1, "fixed", FIXED, 0.0)]
    layer = [ModelSpec("layer-sr", s, "layer", recovery) for s in (0, 1)]
    return Groups(
        [Ensemble(layers, "fixed", act, fixed, dtype=F64),
         Ensemble(layers, "layer", act, layer, dtype=F64)]
    )  # fmt: skip


def data(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(-3, 3, 64, dtype=F64, device=device).unsqueeze(-1)
    return x, torch.sin(3 * x)


def per_parameter_adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    state: list[tuple[torch.Tensor, torch.Tensor]],
    rates: list[torch.Tensor],
    active: torch.Tensor,
    t: int,
) -> None:
    """The engine's update as it was before the flat update, one parameter at a time (the reference
    for bit-for-bit equality: same arithmetic, masks always applied)."""
    bias1, bias2_sqrt = 1 - 0.9**t, math.sqrt(1 - 0.999**t)
    for p, g, (m, v), rate in zip(params, grads, state, rates):
        row_rate = rate * active.reshape(rate.shape)
        g = torch.where(row_rate > 0, g, 0.0)
        m.lerp_(g, 1 - 0.9)
        v.mul_(0.999).addcmul_(g, g, value=1 - 0.999)
        denom = (v.sqrt() / bias2_sqrt).add_(1e-8)
        p.sub_(m / denom * (row_rate / bias1))


@pytest.mark.parametrize("all_active", [True, None])
def test_flat_update_equals_the_per_parameter_update_bit_for_bit(all_active: bool | None) -> None:
    """Both the shortcut (every model known active) and the masked path give, bit for bit, the
    per-parameter masked update; a row with rate 0 and a NaN gradient stays frozen."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 1, 5), (4, 1, 5), (4, 5, 1), (4, 1, 1)]
    start = [torch.randn(s, generator=gen, dtype=F64) for s in shapes]
    rows = torch.tensor([1e-2, 3e-3, 0.0, 1e-2], dtype=F64)
    ours = [p.clone().requires_grad_() for p in start]
    opt = StackedAdam(ours, [rows] * 4, [0] * 4)
    ref = [p.clone() for p in start]
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in ref]
    rates = [rows.reshape(-1, 1, 1)] * 4
    active = torch.ones(4, dtype=torch.bool)
    for t in range(1, 6):
        grads = [torch.randn(s, generator=gen, dtype=F64) for s in shapes]
        grads[0][2] = math.nan  # the zero-rate row: must not move, NaN or not
        for p, g in zip(ours, grads):
            p.grad = g.clone()
        opt.step(active, 1.0, all_active)
        per_parameter_adam(ref, grads, state, rates, active, t)
    for p, r, s in zip(ours, ref, start):
        assert torch.equal(p.detach(), r)
        assert torch.equal(p.detach()[2], s[2])


def test_parameters_become_views_of_one_flat_tensor_without_changing_values() -> None:
    model = mixed([1, 6, 6, 1], "tanh", 2)
    before = [p.detach().clone() for p in model.parameters()]
    opt = make_optimizer(model, TrainConfig())
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
        assert p.is_leaf and p.requires_grad
        assert p.untyped_storage().data_ptr() == opt.flat.untyped_storage().data_ptr()
    with torch.no_grad():
        opt.flat.add_(1.0)
    assert torch.equal(next(iter(model.parameters())).detach(), before[0] + 1.0)


def test_sgd_with_momentum_and_decay_freezes_a_diverged_row() -> None:
    p = torch.ones(3, 2, dtype=F64, requires_grad=True)
    opt = StackedSGD([p], [torch.full((3,), 0.1, dtype=F64)], [0], 0.9, [torch.ones(3, dtype=F64)])
    active = torch.tensor([True, False, True])
    for _ in range(3):
        p.grad = torch.tensor([[1.0, 1.0], [math.nan, math.inf], [2.0, 2.0]], dtype=F64)
        opt.step(active)
    assert torch.equal(p.detach()[1], torch.ones(2, dtype=F64))
    assert torch.isfinite(p.detach()).all() and (p.detach()[0] < 1).all()


def device_side_run(
    monkeypatch: pytest.MonkeyPatch, cfg: TrainConfig, model: Groups, graphs: bool
) -> Any:
    """Train with the step a CUDA graph would capture (on the CPU: run, not captured)."""
    monkeypatch.setattr(train_module, "use_cuda_graph", lambda *_: graphs)
    x, y = data()
    return train(model, x, y, x, y, cfg)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_device_side_step_matches_the_eager_step(
    monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    """Step index, schedule factor and bias corrections as device tensors, bookkeeping in
    place, warm-up steps undone: the same losses, threshold steps and divergence steps."""
    over = {"lr": 0.5, "momentum": 0.9} if optimizer == "sgd" else {"lr": 0.2}
    cfg = TrainConfig(
        steps=40, log_every=5, optimizer=optimizer, schedule="cosine", warmup_steps=4,
        threshold=0.3, **over,
    )  # fmt: skip
    eager = device_side_run(monkeypatch, cfg, mixed([1, 8, 1], "elu", 3), False)
    graph = device_side_run(monkeypatch, cfg, mixed([1, 8, 1], "elu", 3), True)
    assert "cuda_graph_error" not in graph.extra
    for a, b in zip(eager.records, graph.records):
        assert a.step == b.step
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-12, atol=0, equal_nan=True)
        torch.testing.assert_close(a.test_loss, b.test_loss, rtol=1e-12, atol=0, equal_nan=True)
    assert torch.equal(eager.steps_to_threshold, graph.steps_to_threshold)
    assert torch.equal(eager.diverged_at, graph.diverged_at)


def test_device_side_step_freezes_diverged_models_like_eager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = TrainConfig(steps=30, log_every=30, optimizer="sgd", lr=3.0, momentum=0.9)
    eager = device_side_run(monkeypatch, cfg, mixed([1, 8, 1], "elu", 2), False)
    graph = device_side_run(monkeypatch, cfg, mixed([1, 8, 1], "elu", 2), True)
    assert (eager.diverged_at >= 0).any()
    assert torch.equal(eager.diverged_at, graph.diverged_at)


def test_compiled_step_equals_the_reference_and_eager_in_float64() -> None:
    """``compile: true`` compiles the whole step (losses, torch.func gradients, bookkeeping,
    update) as one graph: per model it equals nn.Linear + torch.optim.Adam over 60 steps in
    float64, and the threshold steps match eager mode's. A second run in the same process (other
    seeds, same shapes: the compiled graph is reused) equals its own eager run."""
    layers, act = [1, 8, 8, 1], "tanh"
    x, y = data()
    cfg = TrainConfig(steps=60, log_every=1, lr=1e-2, threshold=0.2, compile=True)
    model = mixed(layers, act, 2)
    result = train(model, x, y, x, y, cfg)
    assert "compile_error" not in result.extra and result.extra["compile_time_s"] > 0
    losses = torch.stack([r.train_loss for r in result.records])
    for i, spec in enumerate(model.members):
        ref, _ = reference_run(spec, layers, act, x, y, 60, 1e-2)
        torch.testing.assert_close(losses[:, i], torch.tensor(ref, dtype=F64), rtol=1e-9, atol=0)
    eager = train(mixed(layers, act, 2), x, y, x, y, cfg.model_copy(update={"compile": False}))
    assert torch.equal(result.steps_to_threshold, eager.steps_to_threshold)
    assert (result.steps_to_threshold > 0).any()
    # The last step is measured, not taken: the trained networks are eager mode's.
    torch.testing.assert_close(result.predictions, eager.predictions, rtol=1e-9, atol=1e-12)
    again = train(mixed(layers, act, 2, first_seed=7), x, y, x, y, cfg)
    own = train(
        mixed(layers, act, 2, first_seed=7), x, y, x, y, cfg.model_copy(update={"compile": False})
    )
    for a, b in zip(again.records, own.records):
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-12, atol=0)
        torch.testing.assert_close(a.test_loss, b.test_loss, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("simdlen", "width"), [(None, 8), (256, 6)], ids=["native", "avx2-width"])
def test_compiled_step_equals_eager_with_schedule_decay_recovery_and_a_frozen_row(
    simdlen: int | None, width: int
) -> None:
    """Cosine schedule with warmup (a factor of 0 first), AdamW weight decay, slope recovery
    (L-LAAF) and a model with learning rate 0: compiled equals eager in float64, and the frozen
    model does not move.

    What holds bit for bit, on any CPU: the frozen row's parameters (a zero rate multiplies
    every change), and, within one compiled run at one thread count, its logged loss at every
    step (every step, the last one included, is measured by the same compiled kernels; an
    eager evaluation rounds differently from compiled kernels on some CPUs). Compiled against
    eager holds to rounding (rtol 1e-9). ``avx2-width`` compiles the step with 256-bit vectors,
    as on a CPU without AVX-512: its reductions round differently from eager mode's here, which
    is how an eager last step showed as a 1-ulp jump of the frozen loss (at a shape compiled by
    no other test, so that the step is compiled afresh for that width)."""
    import torch._inductor.config as inductor_config

    def model() -> Groups:
        return frozen_row_groups([1, width, width, 1])

    x, y = data()
    cfg = TrainConfig(
        steps=40, log_every=5, lr=5e-3, schedule="cosine", warmup_steps=4, weight_decay=1e-2
    )
    eager = train(model(), x, y, x, y, cfg)
    trained = model()
    start = [p.detach().clone() for p in trained.ensembles()[0].parameters()]
    with inductor_config.patch({"cpp.simdlen": simdlen}):
        compiled = train(trained, x, y, x, y, cfg.model_copy(update={"compile": True}))
    assert "compile_error" not in compiled.extra and "compile_skipped" not in compiled.extra
    for a, b in zip(eager.records, compiled.records):
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-9, atol=0)
        torch.testing.assert_close(a.recovery, b.recovery, rtol=1e-9, atol=0, equal_nan=True)
    moved = [p.detach() for p in trained.ensembles()[0].parameters()]
    assert all(torch.equal(p[1], s[1]) for p, s in zip(moved, start))  # the frozen row
    assert not all(torch.equal(p[0], s[0]) for p, s in zip(moved, start))  # its neighbour trained
    frozen = torch.stack([r.train_loss[1] for r in compiled.records])
    assert torch.equal(frozen, frozen[:1].expand_as(frozen))


def test_compiled_step_freezes_diverged_models_like_eager() -> None:
    """SGD with momentum and L2 decay at a rate that makes some models diverge: the compiled
    step freezes the same models at the same steps and leaves the others' losses as eager mode
    has them."""
    cfg = TrainConfig(
        steps=30, log_every=5, optimizer="sgd", lr=0.3, momentum=0.9, weight_decay=1e-3
    )
    x, y = data()
    eager = train(mixed([1, 8, 1], "elu", 2), x, y, x, y, cfg)
    compiled = train(
        mixed([1, 8, 1], "elu", 2), x, y, x, y, cfg.model_copy(update={"compile": True})
    )
    assert "compile_error" not in compiled.extra
    assert (eager.diverged_at >= 0).any() and (eager.diverged_at < 0).any()
    assert torch.equal(eager.diverged_at, compiled.diverged_at)
    for a, b in zip(eager.records, compiled.records):
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-9, atol=0, equal_nan=True)


def test_a_step_that_fails_to_compile_trains_eagerly_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compile error in the warm-up: the run is the eager run bit for bit, with the reason;
    one in mid-run (a recompile for a new thread count, say): the run goes on eagerly from that
    step, Adam's step count included, and equals eager mode to float64 rounding."""
    x, y = data()
    # The structure of the reference test above (its schedule tables too: 40 + 3 steps pad to
    # 64 as 60 + 3 do): its compiled step is reused, not compiled again.
    cfg = TrainConfig(steps=40, log_every=1, lr=1e-2, threshold=0.3)
    eager = train(mixed([1, 8, 8, 1], "tanh", 2), x, y, x, y, cfg)
    on = cfg.model_copy(update={"compile": True})

    def broken(*args: Any) -> Any:
        def step(schedule: Any) -> Any:
            raise RuntimeError("no compiler here")

        return step

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "fused_step", broken)
        failed = train(mixed([1, 8, 8, 1], "tanh", 2), x, y, x, y, on)
    assert failed.extra["compile_error"]  # torch.compile reports the exception it traced
    assert "compile_time_s" in failed.extra
    for a, b in zip(eager.records, failed.records):
        assert torch.equal(a.train_loss, b.train_loss)

    replay = train_module._DeviceStep.replay

    def flaky(self: Any) -> Any:
        if int(self.schedule.index) == 7:
            raise RuntimeError("recompile failed")
        return replay(self)

    monkeypatch.setattr(train_module._DeviceStep, "replay", flaky)
    late = train(mixed([1, 8, 8, 1], "tanh", 2), x, y, x, y, on)
    assert late.extra["compile_error"] == "RuntimeError: recompile failed"
    for a, b in zip(eager.records, late.records):
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-12, atol=0)
    assert torch.equal(late.steps_to_threshold, eager.steps_to_threshold)


def test_compiled_step_recompiles_once_when_a_thread_guard_steps_down() -> None:
    """The thread guard stays on for compiled runs: when it drops to one thread mid-run, the
    step is compiled again for that count (its guards are checked whenever the count changes)
    and trains on: in float64 the losses equal eager mode's. (Kernels compiled for another
    thread count may round differently: in float32 this run differs from one that kept two
    threads by 1 ulp after the drop; eager runs do not differ.)"""
    from torch._dynamo.utils import counters

    x, y = data()
    cfg = TrainConfig(steps=20, log_every=5, lr=1e-2)
    shape = [1, 7, 1]  # compiled by no other test: no cached version for either thread count
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        eager = train(mixed(shape, "elu", 3), x, y, x, y, cfg)
        on = cfg.model_copy(update={"compile": True})
        train(mixed(shape, "elu", 3), x, y, x, y, on)  # compiled for 2 threads
        compiled_before = counters["stats"]["unique_graphs"]
        dropped = train(
            mixed(shape, "elu", 3), x, y, x, y, on,
            on_step=lambda step: torch.set_num_threads(1) if step == 10 else None,
        )  # fmt: skip
        assert torch.get_num_threads() == 1
        assert counters["stats"]["unique_graphs"] - compiled_before == 1  # for 1 thread
    finally:
        torch.set_num_threads(before)
    assert "compile_error" not in dropped.extra
    for a, b in zip(eager.records, dropped.records):
        torch.testing.assert_close(a.train_loss, b.train_loss, rtol=1e-12, atol=0)
        torch.testing.assert_close(a.test_loss, b.test_loss, rtol=1e-12, atol=0)


def test_cuda_graph_true_off_cuda_is_a_config_error() -> None:
    from aaf_cli.api import load_config

    with pytest.raises(ConfigError, match="cuda_graph: true needs device: cuda"):
        load_config(None, ["device=cpu", "train.cuda_graph=true"])
    x, y = data()
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        train(mixed([1, 4, 1], "elu", 1), x, y, x, y, TrainConfig(steps=2, cuda_graph=True))


def test_auto_policies_on_the_cpu() -> None:
    """``compile: auto`` compiles a CPU run predicted to train eagerly for two minutes or more
    (and says so), a CUDA run of 5e7 model-steps or more; the default experiment stays eager;
    never a CUDA graph on the CPU."""
    from aaf_cli.api import load_config
    from aaf_cli.budget import predicted_seconds

    cpu = torch.device("cpu")
    cfg = TrainConfig(steps=50_000)
    limit = train_module.COMPILE_AUTO_CPU_SECONDS
    assert train_module.use_compile(cfg, cpu) == (False, None)  # nothing predicted
    on, why = train_module.use_compile(cfg, cpu, limit)
    assert on and why == "auto: eager training predicted at 120 s on the CPU (>= 120 s)"
    assert not train_module.use_compile(cfg, cpu, limit - 1)[0]
    assert train_module.use_compile(TrainConfig(compile=True), cpu) == (True, None)
    assert not train_module.use_cuda_graph(cfg, cpu, mixed([1, 4, 1], "elu", 1), 300)
    # CUDA: by model-steps (the default experiment's 20 x 5000 stays eager, then captured).
    cuda, five = torch.device("cuda"), TrainConfig(steps=5000)
    assert train_module.use_compile(five, cuda, None, 20) == (
        False, "auto: 1e+05 model-steps on CUDA (< 5e+07)"
    )  # fmt: skip
    assert train_module.use_compile(five, cuda, None, 16384)[0]
    default = load_config(None, [])
    assert predicted_seconds(default) < limit / 4
    assert predicted_seconds(load_config(None, ["train.steps=200000"])) > limit
    # A packed sweep's job of 3 points of the default trains 3 times the models.
    assert predicted_seconds(default, 60) == pytest.approx(3 * predicted_seconds(default))


@pytest.mark.parametrize("kind", KINDS)
def test_input_derivatives_survive_the_flat_optimizer(kind: str) -> None:
    """The physics-informed path: u, du/dx and d2u/dx2 of every model (inputs [M, N, 1] that
    require grad, create_graph) match the per-model network, after the optimiser has made the
    parameters views of its flat tensor and taken a step."""
    act = "tanh"
    spec = variant(kind)
    members = [ModelSpec(kind, s, kind, spec) for s in range(2)]
    model = Groups([Ensemble([1, 6, 6, 1], kind, act, members, dtype=F64)])
    opt = make_optimizer(model, TrainConfig(lr=1e-2))
    x = torch.linspace(-1, 1, 9, dtype=F64).reshape(1, -1, 1).repeat(2, 1, 1).requires_grad_()
    model(x).sum().backward()
    opt.step(torch.ones(2, dtype=torch.bool))
    x.grad = None
    u = model(x)
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x, create_graph=True, materialize_grads=True)
    for i in range(2):
        from aaf_cli.models import PlainMLP

        net = PlainMLP([1, 6, 6, 1], kind, act, spec, dtype=F64)
        net.load_state_dict(model.state_dict_of(i))
        xi = x[i].detach().clone().requires_grad_()
        ui = net(xi)
        (dui,) = torch.autograd.grad(ui.sum(), xi, create_graph=True)
        (d2ui,) = torch.autograd.grad(dui.sum(), xi, materialize_grads=True)
        torch.testing.assert_close(u[i], ui, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(du[i], dui, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(d2u[i], d2ui, rtol=1e-9, atol=1e-11)


def test_summary_says_whether_the_step_ran_as_a_cuda_graph() -> None:
    from aaf_cli.pipeline import cuda_graph_entries

    assert cuda_graph_entries({}) == {}  # never tried (the CPU)
    assert cuda_graph_entries({"cuda_graph_time_s": 0.5}) == {
        "cuda_graph": True,
        "cuda_graph_time_s": 0.5,
    }
    failed = cuda_graph_entries({"cuda_graph_time_s": 0.1, "cuda_graph_error": "RuntimeError: x"})
    assert failed == {
        "cuda_graph": False,
        "cuda_graph_time_s": 0.1,
        "cuda_graph_error": "RuntimeError: x",
    }


# ---- CUDA (pytest -m gpu; benchmarks/gpu_check.sh)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("graphs", [False, True], ids=["no-graph", "graph"])
def test_cuda_engine_matches_the_reference_in_float64(compiled: bool, graphs: bool) -> None:
    """On CUDA, eager or compiled, graph-captured or not: the engine equals nn.Linear +
    torch.optim.Adam per model over 100 steps, in float64."""
    layers, act = [1, 16, 16, 1], "tanh"
    model = mixed(layers, act, 2, device="cuda")
    x, y = data("cuda")
    cfg = TrainConfig(steps=100, log_every=1, lr=1e-3, cuda_graph=graphs, compile=compiled)
    result = train(model, x, y, x, y, cfg)
    assert "cuda_graph_error" not in result.extra and "compile_error" not in result.extra
    assert ("cuda_graph_time_s" in result.extra) == graphs
    assert ("compile_time_s" in result.extra) == compiled
    losses = torch.stack([r.train_loss for r in result.records])
    for i, spec in enumerate(model.members):
        ref, _ = reference_run(spec, layers, act, x.cpu(), y.cpu(), 100, 1e-3)
        torch.testing.assert_close(
            losses[:, i], torch.tensor(ref, dtype=F64), rtol=1e-9, atol=1e-14
        )


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_keeps_diverged_models_frozen() -> None:
    cfg = TrainConfig(steps=30, log_every=10, optimizer="sgd", lr=3.0, momentum=0.9)
    results = []
    for graphs in (False, True):
        x, y = data("cuda")
        model = mixed([1, 8, 1], "elu", 2, device="cuda")
        results.append(train(model, x, y, x, y, cfg.model_copy(update={"cuda_graph": graphs})))
    assert torch.equal(results[0].diverged_at, results[1].diverged_at)
    assert (results[0].diverged_at >= 0).any()


@pytest.mark.slow
def test_memory_estimate_is_within_2x_of_the_measured_peak_for_16_models() -> None:
    """``aaf validate``'s memory estimate against the peak RSS growth of a fresh
    process training the default experiment with 16 models (benchmarks/bench_peers.py)."""
    import subprocess
    import sys

    from benchmarks.bench_peers import MEMORY_PROBE

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux) for the peak RSS")
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE % (8, 20, "cpu")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    ).stdout.split()
    estimate, peak = float(out[-2]), float(out[-1])
    assert 0.5 <= peak / estimate <= 2.0, (estimate, peak)
