"""Ctrl-C during `aaf run` keeps what was computed: status interrupted, exit code 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .conftest import SMOKE, only_run


def test_sigint_writes_an_interrupted_run_and_exits_130(tmp_path: Path) -> None:
    aaf = Path(sys.executable).parent / "aaf"
    proc = subprocess.Popen(
        [
            str(aaf),
            "run",
            str(SMOKE),
            "--runs-dir",
            str(tmp_path),
            "-q",
            "--set",
            "train.steps=1000000",
            "--set",
            "train.log_every=100",
            "--set",
            "train.compile=false",  # train at once (auto would compile a run this long)
            "--set",
            "tune=off",  # the run's own training is what is interrupted
            "--force",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob("*/config.yaml")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # let it train a little
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    folder = only_run(tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 0 < summary["steps_done"] < 1_000_000
    for name in ("metrics.csv", "loss_curves.png", "fit.png", "slopes.png"):
        assert (folder / name).is_file()
    assert not list(folder.glob(".*tmp*"))
    assert "Traceback" not in err


def test_metrics_are_on_disk_while_training(tmp_path: Path) -> None:
    """A run killed at any moment keeps its metrics: they are flushed while it trains."""
    from aaf_cli.config import load_config
    from aaf_cli.pipeline import execute
    from aaf_cli.runs import read_metrics

    seen: dict[int, list[int]] = {}

    def on_log(record: Any) -> None:
        folder = next(tmp_path.iterdir())
        if record.step in (40, 80):
            series = read_metrics(folder / "metrics.csv")
            seen[record.step] = series[0].steps
            assert not (folder / "summary.json").exists()

    cfg = load_config(SMOKE, ["train.steps=100", "train.log_every=20"])
    execute(cfg, tmp_path, on_log=on_log, flush_every=0.0)
    # Each flush holds every record up to and including the one being logged.
    assert seen == {40: [0, 20, 40], 80: [0, 20, 40, 60, 80]}
