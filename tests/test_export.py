"""`aaf export`: round trips through MLflow's and TensorBoard's own readers (no mocks).

One tiny real run (smoke config, 20 steps, 2 seeds) is exported once per module; the numbers read
back are checked against the run folder's own files, parsed here with the csv module.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from aaf_cli.cli import app
from aaf_cli.stats import geometric_mean
from aaf_cli.trackers import flatten_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
OVERRIDES = ["train.steps=20", "seeds=2"]
FIGURES = {"loss_curves.png", "fit.png", "slopes.png"}
# MLflow's SQLite store trips a SQLAlchemy deprecation inside MLflow: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aaf_cli.config import load_config
    from aaf_cli.pipeline import execute

    runs_dir = tmp_path_factory.mktemp("export") / "runs"
    cfg = load_config(SMOKE, OVERRIDES)
    return execute(cfg, runs_dir, str(SMOKE), OVERRIDES).folder


@pytest.fixture(scope="module")
def exported(run_folder: Path) -> dict[str, Any]:
    """The run exported to both trackers through the real CLI, once for the module."""
    base = run_folder.parent.parent
    uri = f"sqlite:///{base / 'mlflow.db'}"
    tb = base / "tb"
    result = CliRunner().invoke(
        app, ["export", str(run_folder), f"--mlflow={uri}", "--tensorboard", str(tb)]
    )
    assert result.exit_code == 0, result.output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("aaf")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return {
        "uri": uri,
        "tb": tb,
        "output": result.output,
        "client": client,
        "run": runs[0],
        "experiment": experiment,
    }


def _metrics_csv(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open(encoding="utf-8", newline="") as fh:
        assert fh.readline().startswith("# aaf metrics format")
        return list(csv.DictReader(fh))


def _history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of the config, keyed the way --set addresses them."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
        out = {}
        for i, v in enumerate(node):
            out.update(_leaves(v, f"{prefix}.{i}"))
        return out
    return {prefix: node}


def test_cli_prints_one_line_per_run_and_target(exported: dict[str, Any], run_folder: Path) -> None:
    lines = exported["output"].strip().splitlines()
    run_id = exported["run"].info.run_id
    assert lines == [
        f"{run_folder} -> mlflow: run {run_id}, experiment aaf, {exported['uri']}",
        f"{run_folder} -> tensorboard: {exported['tb'] / run_folder.name}",
    ]


def test_mlflow_run_is_named_and_tagged(exported: dict[str, Any], run_folder: Path) -> None:
    run = exported["run"]
    assert run.info.run_name == run_folder.name
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["aaf.folder"] == str(run_folder.resolve())
    assert tags["aaf.status"] == "completed"
    summary = json.loads((run_folder / "summary.json").read_text())
    assert tags["aaf.version"] == summary["environment"]["aaf"]
    assert "adaptive" in tags["mlflow.note.content"]
    # A local SQLite store keeps its artifacts beside the database, not in ./mlruns.
    db = Path(exported["uri"].removeprefix("sqlite:///"))
    assert exported["experiment"].artifact_location == (db.parent / "mlartifacts/aaf").as_uri()


def test_mlflow_params_equal_the_config(exported: dict[str, Any], run_folder: Path) -> None:
    params = exported["run"].data.params
    config = yaml.safe_load((run_folder / "config.yaml").read_text())
    leaves = _leaves(config)
    assert set(params) == set(leaves)
    for key, value in leaves.items():
        # Strings as they are, everything else as JSON (1e-08, null, [1, 8, 1]).
        assert params[key] == value if isinstance(value, str) else json.loads(params[key]) == value
    assert float(params["train.eps"]) == config["train"]["eps"]
    assert params["train.lr"] == "0.01"
    assert params["train.steps"] == "20"
    assert params["variants.1.n"] == "10.0"
    assert params["model.layers"] == "[1, 8, 1]"


def test_mlflow_histories_equal_metrics_csv(exported: dict[str, Any], run_folder: Path) -> None:
    client, run_id = exported["client"], exported["run"].info.run_id
    rows = _metrics_csv(run_folder)
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == list(range(0, 21, 5))
    for variant in ("fixed", "adaptive"):
        for name, column in (("test_mse", "test_loss"), ("train_mse", "train_loss")):
            by_seed: dict[int, list[tuple[int, float]]] = {}
            for r in rows:
                if r["variant"] == variant:
                    by_seed.setdefault(int(r["seed"]), []).append(
                        (int(r["step"]), float(r[column]))
                    )
            assert sorted(by_seed) == [0, 1]
            for seed, expected in by_seed.items():
                got = _history(client, run_id, f"{variant}/seed{seed}/{name}")
                assert got == expected
            values = [point for history in by_seed.values() for point in history]
            center = [(step, geometric_mean([v for s, v in values if s == step])) for step in steps]
            assert _history(client, run_id, f"{variant}/{name}_geomean") == center


def test_mlflow_activation_parameters_per_step(exported: dict[str, Any], run_folder: Path) -> None:
    client, run_id = exported["client"], exported["run"].info.run_id
    with (run_folder / "parameters.csv").open(encoding="utf-8", newline="") as fh:
        fh.readline()
        rows = [r for r in csv.DictReader(fh) if r["parameter"] == "n*a"]
    for seed in (0, 1):
        expected = [(int(r["step"]), float(r["value"])) for r in rows if r["seed"] == str(seed)]
        assert len(expected) == 5
        assert _history(client, run_id, f"adaptive/seed{seed}/n_a") == expected


def test_mlflow_summary_metrics_and_artifacts(exported: dict[str, Any], run_folder: Path) -> None:
    client, run = exported["client"], exported["run"]
    summary = json.loads((run_folder / "summary.json").read_text())
    metrics = run.data.metrics
    for variant in ("fixed", "adaptive"):
        stats = summary["variants"][variant]
        assert metrics[f"summary/{variant}/final_test/median"] == stats["final_test"]["median"]
        assert metrics[f"summary/{variant}/best_train/min"] == stats["best_train"]["min"]
    comparison = summary["comparisons"][0]
    assert metrics["summary/adaptive/vs_fixed/p_value"] == comparison["p_value"]
    history = client.get_metric_history(run.info.run_id, "summary/adaptive/final_test/median")
    assert [m.step for m in history] == [summary["steps_done"]]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert FIGURES | {"summary.json", "config.yaml", "metrics.csv", "aggregates.csv"} <= names
    assert not any(name.startswith("checkpoints") for name in names)
    local = client.download_artifacts(run.info.run_id, "summary.json", str(run_folder.parent))
    assert Path(local).read_bytes() == (run_folder / "summary.json").read_bytes()


def test_tensorboard_scalars_equal_metrics_csv(exported: dict[str, Any], run_folder: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(exported["tb"] / run_folder.name), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"fixed/test_mse/geomean", "adaptive/seed1/train_mse", "adaptive/seed0/n_a"} <= tags
    rows = _metrics_csv(run_folder)
    for variant in ("fixed", "adaptive"):
        for seed in (0, 1):
            got = [(e.step, e.value) for e in events.Scalars(f"{variant}/seed{seed}/test_mse")]
            expected = [
                # TensorBoard keeps 32-bit floats; the losses are float32 to begin with.
                (int(r["step"]), float(np.float32(r["test_loss"])))
                for r in rows
                if r["variant"] == variant and r["seed"] == str(seed)
            ]
            assert got == expected
        centers = [(e.step, e.value) for e in events.Scalars(f"{variant}/train_mse/geomean")]
        for step, value in centers:
            both = [
                float(r["train_loss"])
                for r in rows
                if r["variant"] == variant and int(r["step"]) == step
            ]
            assert value == float(np.float32(geometric_mean(both)))
        assert [s for s, _ in centers] == list(range(0, 21, 5))
    assert "aaf/config" in events.Tags()["tensors"]


def test_export_again_skips_and_force_replaces(exported: dict[str, Any], run_folder: Path) -> None:
    runs_dir = run_folder.parent
    tb = runs_dir.parent / "tb-again"
    args = ["export", "--last", "1", "--runs-dir", str(runs_dir), "--tensorboard", str(tb)]
    args += ["--experiment", "again", "--mlflow", exported["uri"]]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "already in mlflow" in second.output
    assert "already in tensorboard" in second.output
    client = exported["client"]
    experiment = client.get_experiment_by_name("again")
    (before,) = client.search_runs([experiment.experiment_id])
    forced = CliRunner().invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    (after,) = client.search_runs([experiment.experiment_id])
    assert after.info.run_id != before.info.run_id
    assert client.get_run(before.info.run_id).info.lifecycle_stage == "deleted"
    assert len(list((tb / run_folder.name).iterdir())) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "no-such-run", "--tensorboard", "tb"], "no run folder or run named"),
        (["export", "RUN"], "nothing to export to: give --mlflow [URI] and/or --tensorboard DIR"),
        (["export", "--mlflow", "RUN"], "not a tracking URI"),
        (["export", "--tensorboard", "tb"], "give run folders, names or globs, or --last N"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], message: str, run_folder: Path, tmp_path: Path
) -> None:
    args = [str(run_folder) if a == "RUN" else str(tmp_path / a) if a == "tb" else a for a in args]
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: ")
    assert message in result.output
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize(
    ("module", "flag", "line"),
    [
        ("mlflow", "--mlflow", "Error: --mlflow needs MLflow: pip install 'aaf[mlflow]'"),
        (
            "tensorboard",
            "--tensorboard=tb",
            "Error: --tensorboard needs TensorBoard: pip install 'aaf[tensorboard]'",
        ),
    ],
)
def test_missing_extra_is_one_line(
    module: str, flag: str, line: str, run_folder: Path, tmp_path: Path
) -> None:
    # The package made absent for real (an import of it fails), not a stand-in for it.
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['aaf', *sys.argv[1:]]; "
        "from aaf_cli.cli import main; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "export", str(run_folder), flag],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == line + "\n"
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_flatten_config_cuts_long_values() -> None:
    flat = flatten_config(
        {"target": {"expr": "x" * 7000, "domain": [-1, 1]}, "variants": [{"n": 5}]}, 6000
    )
    assert len(flat["target.expr"]) == 6000
    assert flat["target.expr"].endswith("...")
    assert flat["target.domain"] == "[-1, 1]"
    assert flat["variants.0.n"] == "5"


def test_unfinished_run_exports_what_it_logged(
    exported: dict[str, Any], run_folder: Path, tmp_path: Path
) -> None:
    import shutil

    # A run still going (or killed): no summary.json yet.
    copy = tmp_path / "runs" / run_folder.name
    shutil.copytree(run_folder, copy)
    (copy / "summary.json").unlink()
    args = ["export", str(copy), "--experiment", "unfinished", "--mlflow", exported["uri"]]
    result = CliRunner().invoke(app, [*args, "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    client = exported["client"]
    (run,) = client.search_runs([client.get_experiment_by_name("unfinished").experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags["aaf.status"] == "incomplete"
    assert not any(key.startswith("summary/") for key in run.data.metrics)
    assert len(_history(client, run.info.run_id, "adaptive/seed1/test_mse")) == 5
    assert "summary.json" not in {a.path for a in client.list_artifacts(run.info.run_id)}
    # Once the run has finished, exporting it again replaces the unfinished export.
    shutil.copy(run_folder / "summary.json", copy / "summary.json")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "skipped" not in again.output, again.output
    (finished,) = client.search_runs([client.get_experiment_by_name("unfinished").experiment_id])
    assert finished.info.run_id != run.info.run_id and finished.info.status == "FINISHED"
    assert finished.data.tags["aaf.summary_format"] == "3"


def test_a_pde_run_exports_its_metrics_by_meaning_and_its_loss_terms(tmp_path: Path) -> None:
    """A physics-informed run's train metric is the PINN loss and its test metric the relative
    L2 error: TensorBoard gets them under those names, with each loss term per step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aaf_cli.config import load_config
    from aaf_cli.pipeline import execute

    config = ROOT / "configs" / "pde_smoke.yaml"
    overrides = ["train.steps=10", "seeds=1", "tune=off"]
    folder = execute(
        load_config(config, overrides), tmp_path / "runs", str(config), overrides
    ).folder
    result = CliRunner().invoke(app, ["export", str(folder), "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "tb" / folder.name), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"gaaf/seed0/pinn_loss", "gaaf/seed0/rel_l2", "fixed/rel_l2/geomean"} <= tags
    assert not any("mse" in tag for tag in tags), sorted(tags)
    rows = _metrics_csv(folder)
    got = [(e.step, e.value) for e in events.Scalars("gaaf/seed0/rel_l2")]
    assert got == [
        (int(r["step"]), float(np.float32(r["test_loss"]))) for r in rows if r["variant"] == "gaaf"
    ]
    with (folder / "terms.csv").open(encoding="utf-8", newline="") as fh:
        fh.readline()
        terms = list(csv.DictReader(fh))
    for name in ("residual", "initial", "sides"):
        expected = [
            (int(r["step"]), float(np.float32(r["value"])))
            for r in terms
            if r["variant"] == "fixed" and r["name"] == f"term:{name}"
        ]
        assert len(expected) == 3  # steps 0, 5, 10
        assert [(e.step, e.value) for e in events.Scalars(f"fixed/seed0/term_{name}")] == expected
