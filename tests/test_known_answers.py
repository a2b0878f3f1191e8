"""Known answers: values computed by hand or precomputed, not just self-consistency.

Each test here pins a meaning that a plausible one-line change would break while every
engine-versus-reference or reproducibility test still passed: the bootstrap
percentiles, which loss counts for "steps to threshold", that a diverged model is frozen at
finite values, that the logged test loss is the test grid's, Rowdy's j-th frequency, and that
``metrics.csv`` is replaced atomically.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from aaf_cli import runs
from aaf_cli.activations import RowdyFamily, RowdyUnit
from aaf_cli.config import TrainConfig, load_config
from aaf_cli.experiment import make_dataset, run_experiment
from aaf_cli.models import Ensemble, Groups, ModelSpec, PlainMLP, load_checkpoint
from aaf_cli.pipeline import execute, write_checkpoints
from aaf_cli.results import Series
from aaf_cli.stats import bootstrap_mean_ci
from aaf_cli.train import train

from .conftest import SMOKE

# --------------------------------------------------------------------------------------------
# 1. The bootstrap interval: 2.5th and 97.5th percentiles of the resampled means.

SAMPLE = [0.3, 1.2, -0.4, 2.5, 0.9, 1.7, -1.1, 0.6]


def test_bootstrap_interval_matches_its_precomputed_value() -> None:
    # Precomputed with the fixed resampling seed (random.Random(20200101), 10 000 resamples).
    assert bootstrap_mean_ci(SAMPLE) == pytest.approx((-0.025, 1.45), abs=1e-12)
    assert bootstrap_mean_ci(SAMPLE, level=0.5) == pytest.approx((0.4625, 0.975), abs=1e-12)


def test_bootstrap_interval_has_the_normal_theory_width() -> None:
    # For a large sample the 95% percentile interval of the mean is close to
    # mean +- 1.96 s / sqrt(n); a 50% interval would be less than half as wide.
    values = [math.sin(1.7 * k) + 0.1 * (k % 7) for k in range(200)]
    lo, hi = bootstrap_mean_ci(values, samples=4000)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.fmean(values)
    assert lo < mean < hi
    assert (hi - lo) / (2 * half) == pytest.approx(1.0, abs=0.1)


# --------------------------------------------------------------------------------------------
# 2. Steps to threshold count the training data loss, not the test loss.


def _tiny_fixed(seeds: list[int], dtype: torch.dtype = torch.float64) -> Groups:
    members = [ModelSpec("fixed", s) for s in seeds]
    return Groups([Ensemble([1, 8, 1], "fixed", "tanh", members, dtype=dtype)])


def test_steps_to_threshold_use_the_training_data_not_the_test_data() -> None:
    x = torch.linspace(-1, 1, 32, dtype=torch.float64).reshape(-1, 1)
    y = 0.5 * x
    x_test = torch.linspace(-1, 1, 50, dtype=torch.float64).reshape(-1, 1)
    y_test = 0.5 * x_test + 3.0  # a test loss near 9: never below the threshold
    cfg = TrainConfig(lr=0.02, steps=300, log_every=1, threshold=1e-3, compile=False)
    result = train(_tiny_fixed([0, 1]), x, y, x_test, y_test, cfg)
    train_losses = torch.stack([r.train_loss for r in result.records])  # [steps + 1, M]
    test_losses = torch.stack([r.test_loss for r in result.records])
    assert bool((test_losses > 1.0).all())
    for i in range(2):
        below = (train_losses[:, i] < cfg.threshold).nonzero()
        assert len(below) > 0, "the training loss should reach the threshold"
        first = int(below[0])
        assert 0 < first < cfg.steps
        assert int(result.steps_to_threshold[i]) == first


# --------------------------------------------------------------------------------------------
# 3. A diverged model is frozen at its last finite parameters.

DIVERGING = [
    "seeds=2",
    "train.optimizer=sgd",
    "train.lr=0.01",
    "model.activation=elu",
    "variants=[{kind: fixed}, {kind: global, name: boom, lr: 5}]",
]


def test_diverged_model_keeps_its_last_finite_parameters_bit_for_bit() -> None:
    long = run_experiment(load_config(SMOKE, [*DIVERGING, "train.steps=60"]))
    boom = [i for i, m in enumerate(long.members) if m.variant == "boom"]
    for i in boom:
        at = int(long.result.diverged_at[i])
        assert 0 < at < 20, at
        # The parameters after `at` updates gave the first non-finite loss: they are the last
        # finite ones, and a run stopped at exactly that step ends with them.
        short = run_experiment(load_config(SMOKE, [*DIVERGING, f"train.steps={at}"]))
        frozen = long.ensemble.state_dict_of(i)
        last = short.ensemble.state_dict_of(i)
        assert frozen.keys() == last.keys()
        for key, value in frozen.items():
            assert bool(torch.isfinite(value).all()), key
            assert torch.equal(value, last[key]), key
        assert int(short.result.diverged_at[i]) == at


def test_model_with_nan_loss_from_the_start_keeps_its_initial_parameters_under_adam() -> None:
    model = _tiny_fixed([0, 0])
    initial = [p.detach().clone() for p in model.parameters()]
    x = torch.linspace(-1, 1, 16, dtype=torch.float64).reshape(1, -1, 1).repeat(2, 1, 1)
    y = torch.sin(x)
    y[1, 3, 0] = math.nan  # model 1's data has a NaN: its loss is NaN at step 0
    cfg = TrainConfig(lr=0.01, steps=10, log_every=5, compile=False)
    result = train(model, x, y, x[0], torch.sin(x[0]), cfg)
    assert result.diverged_at.tolist() == [-1, 0]
    for before, after in zip(initial, model.parameters()):
        assert bool(torch.isfinite(after).all())
        assert torch.equal(after[1], before[1])
        assert not torch.equal(after[0], before[0])  # the healthy model trained


# --------------------------------------------------------------------------------------------
# 4. The logged test loss is the MSE on the test grid of the final model.


def test_logged_test_loss_is_the_checkpoints_mse_on_the_test_grid(tmp_path: Path) -> None:
    # Noisy training points: the training loss is about 0.25 above the test grid's.
    overrides = ["seeds=2", "train.steps=30", "train.log_every=10", "target.noise=0.5"]
    cfg = load_config(SMOKE, overrides)
    exp = run_experiment(cfg)
    data = make_dataset(cfg, torch.device("cpu"))
    write_checkpoints(tmp_path, cfg, exp)
    last = exp.result.records[-1]
    assert last.step == 30
    y_test = data.y_test.double()
    for i, m in enumerate(exp.members):
        logged = float(last.test_loss[i])
        from_predictions = float((exp.result.predictions[i] - y_test[:, 0]).square().mean())
        net = load_checkpoint(tmp_path / "checkpoints" / f"{m.variant}.pt", m.seed)
        with torch.no_grad():
            from_checkpoint = float((net(data.x_test).double() - y_test).square().mean())
            on_train = float((net(data.x_train).double() - data.y_train.double()).square().mean())
        assert logged == pytest.approx(from_predictions, rel=1e-5)
        assert logged == pytest.approx(from_checkpoint, rel=1e-4)
        # The two data sets give clearly different losses, so the check above means something.
        assert abs(on_train - from_checkpoint) > 0.1
        assert float(last.train_loss[i]) == pytest.approx(on_train, rel=1e-4)


# --------------------------------------------------------------------------------------------
# 5. Rowdy: sigma(n a x) + sum_{j=1}^{K-1} n a_j sin(j n F_j x), by hand, K = 4.

ROWDY_N = 2.0
ROWDY_A = 0.3
ROWDY_AMP = [0.1, -0.2, 0.05]
ROWDY_FREQ = [0.7, 1.1, 0.4]
ROWDY_X = [-1.3, -0.2, 0.0, 0.45, 0.8]


def _rowdy_by_hand(x: float) -> float:
    n = ROWDY_N
    value = math.tanh(n * ROWDY_A * x)
    for j, (amp, freq) in enumerate(zip(ROWDY_AMP, ROWDY_FREQ), start=1):
        value += n * amp * math.sin(j * n * freq * x)
    return value


def test_rowdy_by_hand_known_value() -> None:
    # tanh(0.48) + 0.2 sin(1.12) - 0.4 sin(3.52) + 0.1 sin(1.92), written out.
    assert _rowdy_by_hand(0.8) == pytest.approx(0.868004629470404, abs=1e-12)


def test_rowdy_reference_unit_matches_the_hand_computed_value() -> None:
    unit = RowdyUnit("tanh", ROWDY_N, K=4, dtype=torch.float64)
    with torch.no_grad():
        unit.a.fill_(ROWDY_A)
        unit.amp.copy_(torch.tensor(ROWDY_AMP, dtype=torch.float64))
        unit.freq.copy_(torch.tensor(ROWDY_FREQ, dtype=torch.float64))
    out = unit(torch.tensor(ROWDY_X, dtype=torch.float64))
    assert out.tolist() == pytest.approx([_rowdy_by_hand(x) for x in ROWDY_X], abs=1e-12)


def test_rowdy_batched_family_matches_the_hand_computed_value() -> None:
    specs = [SimpleNamespace(n=ROWDY_N, K=4), SimpleNamespace(n=ROWDY_N, K=4)]
    family = RowdyFamily(specs, "tanh", [3], torch.float64, "cpu")
    with torch.no_grad():
        family.a[0][0].fill_(ROWDY_A)
        family.amp[0][0].copy_(torch.tensor(ROWDY_AMP, dtype=torch.float64).reshape(1, 1, 3))
        family.freq[0][0].copy_(torch.tensor(ROWDY_FREQ, dtype=torch.float64).reshape(1, 1, 3))
    z = torch.tensor(ROWDY_X, dtype=torch.float64).reshape(1, -1, 1).expand(2, -1, 3)
    out = family.activate(z, 0)
    expected = [_rowdy_by_hand(x) for x in ROWDY_X]
    for col in range(3):
        assert out[0, :, col].tolist() == pytest.approx(expected, abs=1e-12)
    # Model 1 keeps the initial a = F_j = 1/n, a_j = 0: plain tanh.
    assert out[1, :, 0].tolist() == pytest.approx([math.tanh(x) for x in ROWDY_X], abs=1e-12)


def test_rowdy_plain_mlp_matches_the_hand_computed_value() -> None:
    spec = SimpleNamespace(n=ROWDY_N, K=4)
    net = PlainMLP([1, 1, 1], "rowdy", "tanh", spec, dtype=torch.float64)
    with torch.no_grad():
        for linear in net.linears:
            assert isinstance(linear, torch.nn.Linear)
            linear.weight.fill_(1.0)
            linear.bias.fill_(0.0)
        act = net.activation(0)
        assert isinstance(act, RowdyUnit)
        act.a.fill_(ROWDY_A)
        act.amp.copy_(torch.tensor(ROWDY_AMP, dtype=torch.float64))
        act.freq.copy_(torch.tensor(ROWDY_FREQ, dtype=torch.float64))
        out = net(torch.tensor(ROWDY_X, dtype=torch.float64).reshape(-1, 1))
    assert out[:, 0].tolist() == pytest.approx([_rowdy_by_hand(x) for x in ROWDY_X], abs=1e-12)


# --------------------------------------------------------------------------------------------
# 6. metrics.csv is replaced atomically: a failed write leaves the previous complete file.


def _metrics(steps: int) -> str:
    s = Series("fixed", 0)
    for step in range(steps):
        s.steps.append(step)
        s.train.append(1.0 / (step + 1))
        s.test.append(2.0 / (step + 1))
        s.recovery.append(math.nan)
    return runs.metrics_csv([s])


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name != "metrics.csv"]


def test_failed_write_keeps_the_previous_complete_metrics_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.csv"
    runs.write_atomic(path, _metrics(3))
    old = path.read_bytes()
    new = _metrics(500)

    def failing_fsync(fd: int) -> None:
        # The new text is half on its way to the disk when the device fails.
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        runs.write_atomic(path, new)
    assert path.read_bytes() == old
    assert [s.steps for s in runs.read_metrics(path)] == [[0, 1, 2]]
    assert _leftovers(tmp_path) == []


def test_metrics_file_is_renamed_into_place_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.csv"
    runs.write_atomic(path, _metrics(3))
    old = path.read_bytes()
    new = _metrics(500)
    seen: list[tuple[bytes, bytes]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        if Path(dst) == path:
            # At the rename the final name still holds the old file, the source the new one.
            seen.append((Path(src).read_bytes(), path.read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    runs.write_atomic(path, new)
    assert seen == [(new.encode(), old)]
    assert path.read_text(encoding="utf-8") == new
    assert _leftovers(tmp_path) == []


def test_run_replaces_metrics_csv_by_rename_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: list[str] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        renamed.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    report = execute(load_config(SMOKE, ["train.steps=10"]), tmp_path, flush_every=0.0)
    # Flushed at every logged step (0, 5, 10), then once more at the end.
    assert renamed.count("metrics.csv") == 4
    assert renamed.count("summary.json") == 1
    names = {p.name for p in report.folder.iterdir()}
    assert not [n for n in names if n.startswith(".")]
