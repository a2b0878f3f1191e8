"""What a Ray task sends back (``sweeps.payload``): folders written from ``decode(encode(results))``
have the bytes of those written from the trained results, and the payload stays small.

Each case trains a pack as a Ray task does (``packing.train_pack``), then writes every point's
folder twice with the driver's writer (``writing.write_points``): from the results themselves
and from their payload. Every file is compared byte for byte (the figures too: matplotlib's PNGs
hold no time stamp, so equal drawings are equal bytes), except ``summary.json``'s ``finished``
and ``duration_s``, which read the clock when the summary is written.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.experiment import ExperimentResult
from aaf_cli.pipeline import start_run
from aaf_cli.sweeps import payload
from aaf_cli.sweeps.packing import plan_packs, train_pack
from aaf_cli.sweeps.writing import write_points

from .conftest import CONFIGS, SMOKE

F64 = ["dtype=float64", "seeds=2"]
#: summary.json's readings of the clock at writing time (``pipeline.build_summary``).
CLOCK = ("finished", "duration_s")
#: The 20-point grid of benchmarks/bench_sweep.py, at 200 steps.
BENCH = [
    [f"variants.1.n={n}", f"train.lr={lr}", "seeds=5", "train.steps=200"]
    for n in ("1", "2", "5", "10", "20")
    for lr in ("3e-4", "1e-3", "3e-3", "1e-2")
]
#: Measured: that grid's payload is 0.366 MB (its pickled results: 5.7 MB).
BENCH_BYTES = int(0.366e6 * 1.5)


def pack(path: Path | None, points: Sequence[Sequence[str]]) -> list[ExperimentResult]:
    """The points' results as a Ray task trains them (one pack, checked)."""
    configs: list[ExperimentConfig] = [load_config(path, list(o)) for o in points]
    assert len(plan_packs(configs)) == 1
    labels = [f"p{k}" for k in range(len(configs))]
    return train_pack(configs, labels=labels)


def write(root: Path, **sets: Sequence[ExperimentResult]) -> dict[str, dict[str, bytes]]:
    """Every point's folder of each set of results as the driver writes them (in one call, so
    that even one point a set keeps two writers busy), under ``root / <set>``: by set, each
    file's bytes by its path (the folders' names alike in every set: the summary names its
    folder)."""
    started = datetime(2024, 5, 17, 12, 0, 0)
    items = []
    for name, results in sets.items():
        for k, exp in enumerate(results):
            folder = root / name / f"{k:03d}"
            folder.mkdir(parents=True)
            start_run(folder, exp.config, "sweep.yaml", [])
            items.append((folder, exp, started))
    for summary, error in write_points(items):
        assert error is None and summary is not None, error
    return {
        name: {
            str(p.relative_to(root / name)): p.read_bytes()
            for p in sorted((root / name).rglob("*"))
            if p.is_file()
        }
        for name in sets
    }


def assert_same_folders(tmp_path: Path, results: list[ExperimentResult]) -> bytes:
    """Write the folders from ``results`` and from their payload; every file alike. Returns
    the payload."""
    blob = payload.encode(results)
    decoded = payload.decode(blob)
    pickle.loads(pickle.dumps(decoded))  # a driver on Ray pickles them to its writers
    folders = write(tmp_path, direct=results, sent=decoded)
    direct, sent = folders["direct"], folders["sent"]
    assert sorted(sent) == sorted(direct)
    for name, data in direct.items():
        if name.endswith("summary.json"):
            a, b = json.loads(data), json.loads(sent[name])
            for key in CLOCK:
                a.pop(key), b.pop(key)
            assert a == b, name
        else:
            assert sent[name] == data, name
    assert any(n.endswith(".png") for n in direct) and any(n.endswith(".pt") for n in direct)
    return blob


def test_an_untuned_pack_with_per_seed_data_writes_the_same_folders(tmp_path: Path) -> None:
    # Per-seed training data: only the drawn models' rows travel; a variant's own rate.
    base = [*F64, "tune=off", "train.steps=30", "target.resample=true"]
    results = pack(SMOKE, [[*base, "variants.1.n=1"], [*base, "variants.0.lr=0.03"]])
    assert results[0].data.x_train.dim() == 3
    blob = assert_same_folders(tmp_path, results)
    assert len(blob) < len(pickle.dumps(results)) / 5


def test_a_tuned_pack_writes_the_same_folders(tmp_path: Path) -> None:
    # The default tuning: its curves and choices reach tuning.csv, tuning_metrics.csv, tuning.png.
    base = [*F64, "train.steps=30"]
    results = pack(SMOKE, [[*base, "variants.1.n=1"], [*base, "variants.1.n=5"]])
    assert all(r.tuning is not None for r in results)
    assert_same_folders(tmp_path, results)


def test_a_pde_run_writes_the_same_folder(tmp_path: Path) -> None:
    # Its terms (terms.csv) ride in the records; the compiled problem stays behind.
    results = pack(CONFIGS / "pde_smoke.yaml", [[*F64, "train.steps=20", "tune=off"]])
    assert getattr(results[0].data, "problem", None) is not None
    assert_same_folders(tmp_path, results)


def test_kans_splines_and_a_control_write_the_same_folder(tmp_path: Path) -> None:
    # Every variant of the KAN config: kan and spline checkpoints, a control's slope (the
    # summary's controls entry), two inputs (fit_2d), a tuning grid of five rates.
    small = ["train.steps=20", "tune.seeds=1", "target.n_train=100", "target.n_test=100"]
    results = pack(CONFIGS / "kan" / "toy.yaml", [[*F64, *small, "target.n_val=50"]])
    assert results[0].controls and results[0].packing is None
    assert_same_folders(tmp_path, results)


def test_the_bench_grid_payload_is_small() -> None:
    """benchmarks/bench_sweep.py's 20 points, packed, at 200 steps (float32, tuned: as run)."""
    blob = payload.encode(pack(None, BENCH))
    assert len(blob) <= BENCH_BYTES, len(blob)


def test_the_payload_grows_with_the_logged_records_not_the_steps_or_validation() -> None:
    def size(*overrides: str) -> int:
        return len(payload.encode(pack(SMOKE, [[*F64, "tune=off", *overrides]])))

    logged = size("train.steps=40", "train.log_every=4")
    assert abs(size("train.steps=80", "train.log_every=8") - logged) < 0.05 * logged
    assert abs(size("train.steps=40", "train.log_every=4", "target.n_val=5000") - logged) < (
        0.05 * logged
    )
    # 30 records more, of 4 models: more than a float32 each.
    assert size("train.steps=40", "train.log_every=1") > logged + 30 * 4 * 4


def test_a_payload_over_the_cap_is_one_line_naming_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    results = pack(
        SMOKE, [[*F64, "tune=off", "train.steps=10", f"variants.1.n={n}"] for n in (1, 5)]
    )
    monkeypatch.setattr(payload, "MAX_BYTES", 1000)
    with pytest.raises(payload.PayloadError) as caught:
        payload.encode(results)
    message = str(caught.value)
    assert "\n" not in message
    assert "the job of points p0, p1" in message and "train.log_every" in message


def test_bytes_that_are_no_payload_are_refused() -> None:
    with pytest.raises(payload.PayloadError, match="not an aaf payload"):
        payload.decode(b"\x80\x05 a pickle")
    other = payload.MAGIC + bytes([payload.FORMAT + 1])
    with pytest.raises(payload.PayloadError, match="same aaf on every node"):
        payload.decode(other)
    with pytest.raises(payload.PayloadError, match="damaged"):
        payload.decode(payload.MAGIC + bytes([payload.FORMAT]) + b"cut short")
