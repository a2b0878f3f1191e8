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


# An object whose __init__ the second Ctrl-C interrupts, and whose __del__ then fails (as
# pyparsing's Forward does when matplotlib builds its mathtext parser at that moment).
FRAGILE = """
import os, signal, sys
from aaf_cli import cli

class Fragile:
    def __init__(self):
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs before the next line
        self.expr = None

    def __del__(self):
        self.expr

def interrupted():
    with cli._interruptible() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: stop after this step
        assert stop()
        Fragile()  # the second, in the middle of building it

if sys.argv[1] == "abort":
    try:
        interrupted()
    except KeyboardInterrupt:
        sys.exit(130)
else:  # a Ctrl-C that reaches the entry point itself
    sys.argv = ["aaf", "--help"]
    cli.app = lambda: Fragile()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cli.main()
"""


def test_an_abort_inside_an_objects_init_prints_no_traceback() -> None:
    """Neither the second Ctrl-C nor one that reaches the entry point prints the traceback of
    a half-built object's failing ``__del__``."""
    for how, last in [("abort", "Aborting now."), ("main", "Interrupted.")]:
        out = subprocess.run(
            [sys.executable, "-c", FRAGILE, how], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 130, out.stderr
        assert out.stderr.strip().splitlines()[-1] == last, out.stderr
        assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
