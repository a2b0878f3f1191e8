"""Ctrl-C during `aaf run` keeps what was computed: status interrupted, exit code 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

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
