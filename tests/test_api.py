"""The Python API: the functions the CLI is a thin layer over, with the numbers the CLI gets."""

from __future__ import annotations

import doctest
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import aaf_cli as aaf
from aaf_cli import api
from aaf_cli.cli import app

from .conftest import SMOKE

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.steps=30", "train.log_every=10", "seeds=2"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> aaf.Run:
    return aaf.run(SMOKE, overrides=SMALL, runs_dir=tmp_path_factory.mktemp("api"))


def test_docstring_examples_run(tmp_path: Path) -> None:
    # The examples in the API's docstrings are executed, so they cannot rot.
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    globs = {**vars(api), "tmp": tmp_path}
    tests = [t for t in finder.find(api, "api", globs=globs) if t.examples]
    # Examples share one namespace in source order: run() makes the result compare() uses.
    order = ["load_config", "check", "run", "compare", "sweep"]
    names = [t.name.split(".")[-1] for t in tests]
    assert set(order[:4]) <= set(names) <= set(order), names
    tests.sort(key=lambda t: order.index(t.name.split(".")[-1]))
    for test in tests:
        test.globs = globs
        runner.run(test, clear_globs=False)
    assert runner.failures == 0 and runner.tries >= 8


def test_public_names_are_the_documented_api() -> None:
    names = (
        "load_config",
        "check",
        "run",
        "open_run",
        "list_runs",
        "compare",
        "export",
        "report",
        "sweep",
        "Run",
        "Sweep",
    )
    for name in names:
        assert getattr(aaf, name) is getattr(api, name)
    # No submodule may shadow a function of the API once it is imported.
    import aaf_cli.overview
    import aaf_cli.sweeps.local
    import aaf_cli.trackers  # noqa: F401

    assert aaf.compare is api.compare and aaf.export is api.export
    assert aaf.sweep is api.sweep
    assert sorted(aaf.__all__) == sorted(
        [
            *names,
            "CompareResult",
            "History",
            "ExperimentConfig",
            "AafError",
            "ConfigError",
            "RunError",
            "UsageError",
            "__version__",
        ]
    )
    with pytest.raises(AttributeError):
        aaf.nothing_here  # noqa: B018


def test_import_stays_light() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, aaf_cli; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_load_config_from_a_mapping_names_the_key() -> None:
    cfg = aaf.load_config({"seeds": 3, "train": {"lr": 0.01}}, ["variants.1.n=5"])
    assert cfg.seed_list == [0, 1, 2] and cfg.train.lr == 0.01 and cfg.variants[1].n == 5
    assert aaf.load_config(cfg) is cfg
    with pytest.raises(aaf.ConfigError, match=r"<mapping>.*train\.lr.*greater than 0"):
        aaf.load_config({"train": {"lr": -1}})
    with pytest.raises(aaf.ConfigError, match="did you mean 'steps'"):
        aaf.load_config({"train": {"stepz": 3}})


def test_run_returns_histories_equal_to_the_metrics_file(small_run: aaf.Run) -> None:
    assert small_run.status == "completed"
    assert small_run.variants == ["fixed", "adaptive"] and small_run.seeds == [0, 1]
    lines = (small_run.folder / "metrics.csv").read_text().splitlines()
    header = next(line for line in lines if not line.startswith("#")).split(",")
    rows = [
        dict(zip(header, line.split(","))) for line in lines[lines.index(",".join(header)) + 1 :]
    ]
    h = small_run.history("adaptive", 1)
    mine = [r for r in rows if r["variant"] == "adaptive" and r["seed"] == "1"]
    assert h.steps == [int(r["step"]) for r in mine] == [0, 10, 20, 30]
    assert h.test == [float(r["test_loss"]) for r in mine]
    assert set(small_run.figures) >= {"loss_curves.png", "fit.png", "slopes.png"}
    with pytest.raises(aaf.UsageError, match="no model 'adaptive' seed 7"):
        small_run.history("adaptive", 7)


def test_summary_states_its_rules_and_verdicts(small_run: aaf.Run) -> None:
    summary = small_run.summary
    assert summary is not None and summary["format_version"] == 3
    assert "median of the last 5%" in summary["statistics"]["final"]
    [comparison] = small_run.comparisons
    assert comparison["ci_method"] == "t" and comparison["min_p"] == 0.5
    assert small_run.verdicts == [comparison["verdict"]]
    assert "2 seeds: p cannot go below 0.5" in comparison["verdict"]


def _long_csv(path: Path, name_column: str) -> dict[tuple[str, int, str], list[float]]:
    lines = path.read_text().splitlines()
    header = lines[1].split(",")
    out: dict[tuple[str, int, str], list[float]] = {}
    for line in lines[2:]:
        row = dict(zip(header, line.split(",")))
        key = (row["variant"], int(row["seed"]), row[name_column])
        out.setdefault(key, []).append(float(row["value"]))
    return out


def test_histories_carry_activation_parameters_and_times(small_run: aaf.Run) -> None:
    """Opened again from its folder, a run's histories hold what parameters.csv and
    timing.csv say (parsed here on their own), not only metrics.csv's losses."""
    run = aaf.open_run(small_run.folder)
    logged = _long_csv(run.folder / "parameters.csv", "parameter")
    assert ("adaptive", 1, "n*a") in logged
    for (variant, seed, name), values in logged.items():
        assert run.history(variant, seed).params[name] == values
    assert run.history("fixed", 0).params == {}  # a fixed activation has none
    timing = (run.folder / "timing.csv").read_text().splitlines()[1:]
    seconds = {(v, int(s)): float(t) for s, v, t in (line.split(",") for line in timing)}
    for variant in run.variants:
        for seed in run.seeds:
            h = run.history(variant, seed)
            assert h.time == [seconds[(variant, step)] for step in h.steps]
            assert h.time[0] >= 0 and h.time == sorted(h.time) and h.time[-1] > 0


def test_a_pde_runs_histories_and_frame_carry_its_loss_terms(tmp_path: Path) -> None:
    run = aaf.run(
        ROOT / "configs" / "pde_smoke.yaml",
        overrides=["train.steps=10", "seeds=1", "tune=off"],
        runs_dir=tmp_path,
    )
    terms = _long_csv(run.folder / "terms.csv", "name")
    assert ("gaaf", 0, "term:residual") in terms and ("fixed", 0, "term:initial") in terms
    opened = aaf.open_run(run.folder)
    for (variant, seed, name), values in terms.items():
        assert opened.history(variant, seed).terms[name] == values
    pd = pytest.importorskip("pandas")
    frame = opened.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    one = frame[(frame.variant == "gaaf") & (frame.seed == 0)]
    assert one["term:residual"].tolist() == terms[("gaaf", 0, "term:residual")]
    assert one["n*a"].notna().all() and one["time"].notna().all()


def test_to_pandas_frames(small_run: aaf.Run) -> None:
    pd = pytest.importorskip("pandas")
    frame = small_run.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 2 * 2 * 4  # variants x seeds x logged steps
    assert {"variant", "seed", "step", "train", "test"} <= set(frame.columns)
    one = frame[(frame.variant == "fixed") & (frame.seed == 0)]
    assert one.test.tolist() == small_run.history("fixed", 0).test
    assert one.time.tolist() == small_run.history("fixed", 0).time
    assert not frame.time.isna().any()
    adaptive = frame[(frame.variant == "adaptive") & (frame.seed == 1)]
    assert adaptive["n*a"].tolist() == small_run.history("adaptive", 1).params["n*a"]
    assert frame[frame.variant == "fixed"]["n*a"].isna().all()
    outcomes = small_run.to_pandas("outcomes")
    assert len(outcomes) == 4 and {"final_test", "last_test", "best_test"} <= set(outcomes)
    with pytest.raises(aaf.UsageError, match="metrics' or 'outcomes'"):
        small_run.to_pandas("nope")


def test_open_run_by_path_and_name(small_run: aaf.Run) -> None:
    again = aaf.open_run(small_run.folder)
    assert again.history("fixed", 0).test == small_run.history("fixed", 0).test
    by_name = aaf.open_run("smoke", runs_dir=small_run.folder.parent)
    assert by_name.folder == small_run.folder
    with pytest.raises(aaf.RunError):
        aaf.open_run("no-such-run", runs_dir=small_run.folder.parent)
    assert [r.folder for r in aaf.list_runs(small_run.folder.parent)] == [small_run.folder]


def test_cli_and_api_write_the_same_numbers(small_run: aaf.Run, tmp_path: Path) -> None:
    # The CLI is a thin layer over the API: the same config gives the same metrics file.
    args = ["run", str(SMOKE), "--quiet", "--runs-dir", str(tmp_path)]
    for item in SMALL:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert (folder / "metrics.csv").read_bytes() == (small_run.folder / "metrics.csv").read_bytes()
    cli_summary = json.loads((folder / "summary.json").read_text())
    assert cli_summary["comparisons"][0]["verdict"] == small_run.verdicts[0]


def test_compare_through_the_api(small_run: aaf.Run, tmp_path: Path) -> None:
    drawn = aaf.compare([small_run, small_run.folder], out=tmp_path / "c.svg")
    assert drawn.figure == tmp_path / "c.svg" and drawn.figure.exists()
    assert drawn.data.exists() and drawn.repeated == [small_run.folder]
    assert [(r.variant, r.seeds) for r in drawn.rows] == [("fixed", 2), ("adaptive", 2)]
    assert all(math.isfinite(r.final_test or math.nan) for r in drawn.rows)
    with pytest.raises(aaf.UsageError, match="give run folders"):
        aaf.compare([])


def test_check_is_the_validate_path() -> None:
    checked = aaf.check(SMOKE, overrides=["seeds=3"])
    assert checked.estimate.models == 2 * 3 and checked.over_limits == []
    with pytest.raises(aaf.UsageError, match="too large"):
        aaf.check(SMOKE, overrides=["seeds=300"])
    assert aaf.check(SMOKE, overrides=["seeds=300"], force=True).over_limits


def test_overrides_on_a_loaded_config_rename_like_the_yaml_would() -> None:
    variants = [{"kind": "fixed"}, {"kind": "global", "n": 10}, {"kind": "global", "n": 5}]
    cfg = aaf.load_config({"variants": variants})
    assert [v.name for v in cfg.variants] == ["fixed", "global-n10", "global-n5"]
    via_api = aaf.load_config(cfg, ["variants.1.n=2"])
    via_mapping = aaf.load_config({"variants": variants}, ["variants.1.n=2"])
    assert [v.name for v in via_api.variants] == [v.name for v in via_mapping.variants]
    assert via_api.variants[1].name == "global-n2"
    # A given name stays, whatever the overrides.
    named = aaf.load_config({"variants": [{"kind": "fixed"}, {"kind": "global", "name": "g"}]})
    assert aaf.load_config(named, ["variants.1.n=2"]).variants[1].name == "g"
