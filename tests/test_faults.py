"""Faults around ``aaf run``: a second Ctrl-C, SIGKILL at any moment, SIGTERM, concurrent runs.

Every ``aaf run`` here is a real subprocess (the ``aaf`` script beside ``sys.executable``), so the
signal handling, the exit codes and the files on disk are the ones a user gets. The run folder
is then read back in-process with ``aaf list``, ``aaf compare`` and ``aaf show`` (``CliRunner``).

The machine may be slow and loaded: every wait polls for an observable event (a file, a line on
stderr, the process exit) under a generous deadline, and every process is killed in a
``finally`` (the ``AafRun`` context manager) whatever happens.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from aaf_cli import runs
from aaf_cli.cli import app
from aaf_cli.runs import FOLDER_PATTERN, read_metrics, read_parameters, read_timing

from .conftest import SMOKE

AAF = Path(sys.executable).parent / "aaf"
LONG_STEPS = 200_000
# Trains for minutes: still training whenever a test signals it (eagerly: `compile: auto` would
# compile a run this long first), untuned: these tests signal the run's own training (a tuning
# phase's own faults have their tests below).
LONG = [
    "--set", f"train.steps={LONG_STEPS}", "--set", "train.log_every=50",
    "--set", "train.compile=false", "--set", "tune=off",
]  # fmt: skip
STOPPING = "Stopping after this step"
START_TIMEOUT = 180.0  # importing torch on a slow, loaded machine
EXIT_TIMEOUT = 180.0  # the final writes (figures, checkpoints) of an interrupted run
POLL = 0.01
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"

runner = CliRunner()


class AafRun:
    """An ``aaf run`` subprocess; its stdout and stderr are collected line by line as they come.

    Use it as a context manager: on the way out a process still running is killed (SIGKILL, by
    its own pid) and reaped.
    """

    def __init__(self, runs_dir: Path, *args: str, quiet: bool = True) -> None:
        command = [str(AAF), "run", str(SMOKE), "--runs-dir", str(runs_dir), *args]
        if quiet:
            command.append("--quiet")
        self.runs_dir = runs_dir
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.stopping = threading.Event()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines)),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if STOPPING in line:
                self.stopping.set()

    @property
    def stdout(self) -> str:
        return "".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def send(self, sig: signal.Signals) -> None:
        assert self.proc.poll() is None, f"aaf exited early ({self.proc.returncode}): {self.stderr}"
        self.proc.send_signal(sig)

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Wait for the exit, then for the last of its output; the exit code."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=30)
        return code

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Poll until ``condition()`` holds; fail at once if the process ends first."""
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            if self.proc.poll() is not None:
                self.wait()
                pytest.fail(f"aaf exited ({self.proc.returncode}) before {what}: {self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {START_TIMEOUT:.0f} s: {self.stderr}")
            time.sleep(POLL)

    def folder(self) -> Path:
        """The run folder, once it holds its ``config.yaml``."""
        self.wait_for(lambda: any(self.runs_dir.glob("*/config.yaml")), "run folder")
        folders = [p for p in self.runs_dir.iterdir() if p.is_dir()]
        assert len(folders) == 1, folders
        return folders[0]

    def training(self) -> Path:
        """The run folder, once training has started (``metrics.csv`` flushed at step 0)."""
        folder = self.folder()
        self.wait_for(lambda: (folder / "metrics.csv").is_file(), "metrics.csv")
        return folder

    def __enter__(self) -> AafRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=EXIT_TIMEOUT)
        for reader in self._readers:
            reader.join(timeout=30)


def all_paths(folder: Path) -> Iterator[Path]:
    """Every file and folder under ``folder``, hidden ones included."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            yield Path(root) / name


def csv_rows(path: Path) -> list[list[str]]:
    """A CSV file (after any ``#`` comment lines) with its header: the rows after the header,
    all as wide as the header."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(line for line in fh if not line.startswith("#")))
    assert rows, f"{path} is empty"
    header, body = rows[0], rows[1:]
    assert all(len(row) == len(header) for row in body), f"{path}: a row cut short"
    return body


def assert_complete(folder: Path) -> dict[str, Any] | None:
    """No temporary file is left and every file there is whole; the summary, if any."""
    leftovers = [p for p in all_paths(folder) if ".tmp" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    assert (folder / "config.yaml").is_file()
    assert (folder / "metrics.csv").is_file()
    series = read_metrics(folder / "metrics.csv")
    assert series and all(s.steps for s in series)
    summary: dict[str, Any] | None = None
    for path in all_paths(folder):
        if path.is_dir():
            assert path.name == "checkpoints", path
            continue
        name = path.name
        if name == "config.yaml":
            assert isinstance(yaml.safe_load(path.read_text(encoding="utf-8")), dict)
        elif name == "metrics.csv":
            pass  # read above
        elif name == "tuning_metrics.csv":
            assert read_metrics(path)  # the tuning phase's curves
        elif name == "tuning.csv":
            assert csv_rows(path)
        elif name == "parameters.csv":
            read_parameters(path, series)
        elif name == "timing.csv":
            assert read_timing(path)
        elif name in ("aggregates.csv", "fit.csv"):
            assert csv_rows(path)
        elif name == "summary.json":
            summary = json.loads(path.read_text(encoding="utf-8"))
            assert isinstance(summary, dict)
        elif name.endswith(".png"):
            data = path.read_bytes()
            assert data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END), path
        elif name.endswith(".pt"):
            payload = torch.load(path, weights_only=True)
            assert payload["state_dicts"], path
        else:
            pytest.fail(f"unexpected file in a run folder: {path}")
    return summary


def aaf_list(runs_dir: Path) -> dict[str, dict[str, Any]]:
    """``aaf list --json``, which must succeed: its entries by folder."""
    result = runner.invoke(app, ["list", "--runs-dir", str(runs_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    return {entry["folder"]: entry for entry in json.loads(result.stdout)}


def aaf_compare(folder: Path, out: Path) -> None:
    """``aaf compare FOLDER --out OUT``, which must succeed and write the figure and its CSV."""
    result = runner.invoke(
        app, ["compare", str(folder), "--out", str(out), "--runs-dir", str(folder.parent)]
    )
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert csv_rows(out.with_suffix(".csv"))


def metrics_end(folder: Path) -> set[int]:
    """The last logged step of every model in ``metrics.csv``."""
    return {s.steps[-1] for s in read_metrics(folder / "metrics.csv")}


# --------------------------------------------------------------------------------------------
# A second Ctrl-C aborts at once, and leaves no half-written file.


@pytest.mark.parametrize("second", ["50ms-apart", "after-stopping-message", "after-first-figure"])
def test_second_ctrl_c_aborts_without_half_written_files(
    runs_dir: Path, tmp_path: Path, second: str
) -> None:
    with AafRun(runs_dir, *LONG) as run:
        folder = run.training()
        run.send(signal.SIGINT)
        if second == "50ms-apart":  # within the last step or the first final writes
            time.sleep(0.05)
        elif second == "after-stopping-message":  # as soon as the user could react to it
            assert run.stopping.wait(timeout=START_TIMEOUT), run.stderr
        else:  # among the figures and checkpoints, well before summary.json
            run.wait_for(lambda: (folder / "loss_curves.png").exists(), "loss_curves.png")
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGINT)
        code = run.wait()
    assert code == 130, run.stderr
    assert STOPPING in run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    summary = assert_complete(folder)
    if summary is not None:
        assert summary["status"] == "interrupted"

    listed = aaf_list(runs_dir)
    assert listed[str(folder)]["status"] == ("incomplete" if summary is None else "interrupted")
    aaf_compare(folder, tmp_path / "second_ctrl_c.png")


def test_an_interrupt_at_any_point_of_an_atomic_write_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    """The deterministic form of the test above: where a second Ctrl-C lands is up to the
    scheduler, so here a ``KeyboardInterrupt`` is raised in turn at every bytecode instruction
    of ``write_atomic`` (what a signal handler can do), and each time the old file or the new
    one is left whole, and nothing else."""
    path = tmp_path / "metrics.csv"
    old, new = b"old, complete\n", b"new, complete\n" * 1000
    code = runs.write_atomic.__code__
    with_temp_file = 0
    for at in range(1, 10_000):
        path.write_bytes(old)
        count = 0

        def local(frame: FrameType, event: str, arg: Any, at: int = at) -> Any:
            nonlocal count, with_temp_file
            if event in ("line", "opcode"):
                count += 1
                if count == at:
                    with_temp_file += any(".tmp" in p.name for p in tmp_path.iterdir())
                    raise KeyboardInterrupt
            return local

        def start(frame: FrameType, event: str, arg: Any) -> Any:
            if frame.f_code is code:
                frame.f_trace_opcodes = True
                return local
            return None

        previous = sys.gettrace()
        sys.settrace(start)
        try:
            runs.write_atomic(path, new)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(previous)
        assert path.read_bytes() in (old, new), at
        assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"], at
        if count < at:  # the write ran to its end without meeting the interrupt
            assert path.read_bytes() == new
            break
    else:
        pytest.fail("write_atomic never ran to its end")
    assert at > 20 and with_temp_file > 5, (at, with_temp_file)


# --------------------------------------------------------------------------------------------
# SIGKILL: nothing gets a chance to clean up; what is on disk must still be readable.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_leaves_a_readable_incomplete_run(
    runs_dir: Path, tmp_path: Path, seed: int
) -> None:
    delay = random.Random(seed).uniform(0.0, 3.0)
    with AafRun(runs_dir, *LONG) as run:
        folder = run.training()
        time.sleep(delay)
        run.send(signal.SIGKILL)
        code = run.wait()
    assert code == -signal.SIGKILL
    assert not (folder / "summary.json").exists()
    assert read_metrics(folder / "metrics.csv")

    entry = aaf_list(runs_dir)[str(folder)]
    assert entry["status"] == "incomplete"
    assert entry["steps"] == LONG_STEPS and 0 <= entry["steps_done"] < LONG_STEPS

    aaf_compare(folder, tmp_path / "x.png")
    show = runner.invoke(app, ["show", str(folder), "--runs-dir", str(runs_dir)])
    assert show.exit_code == 0, show.stderr
    assert "incomplete" in show.stdout


def test_sigkill_before_the_first_metrics_leaves_a_listable_run(
    runs_dir: Path, tmp_path: Path
) -> None:
    # Many training and test points (within the limits that need --force) make the set-up and
    # step 0 take about half a second, so the kill lands between config.yaml and the first
    # metrics.csv. Should the run still beat the poll, try again in a fresh runs dir.
    big = ["--set", "target.n_train=100000", "--set", "target.n_test=1000000"]
    for attempt in range(3):
        where = runs_dir / f"attempt{attempt}"
        with AafRun(where, *LONG, *big) as run:
            folder = run.folder()
            run.send(signal.SIGKILL)
            assert run.wait() == -signal.SIGKILL
        if not (folder / "metrics.csv").exists():
            break
    assert not (folder / "metrics.csv").exists(), "metrics.csv came before every kill"
    assert not (folder / "summary.json").exists()

    entry = aaf_list(where)[str(folder)]
    assert entry["status"] == "incomplete"
    assert entry["steps_done"] == 0

    result = runner.invoke(
        app, ["compare", str(folder), "--out", str(tmp_path / "x.png"), "--runs-dir", str(where)]
    )
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "metrics.csv" in lines[0], result.stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.csv").exists()


def test_sigkill_in_the_tuning_phase_keeps_its_curves_and_a_listable_run(
    runs_dir: Path,
) -> None:
    """A run killed while it tunes: the tuning phase's curves are on disk (tuning_metrics.csv,
    rewritten every few seconds like metrics.csv), the folder lists as incomplete."""
    assert LONG[-2:] == ["--set", "tune=off"]
    with AafRun(runs_dir, *LONG[:-2]) as run:
        folder = run.folder()
        run.wait_for(lambda: (folder / "tuning_metrics.csv").exists(), "tuning_metrics.csv")
        run.send(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL
    curves = read_metrics(folder / "tuning_metrics.csv")
    assert len(curves) == 2 * 3 * 3  # variants x rates x tuning seeds
    assert all(s.steps and not any(math.isfinite(t) for t in s.test) for s in curves)
    assert not (folder / "metrics.csv").exists() and not (folder / "summary.json").exists()
    entry = aaf_list(runs_dir)[str(folder)]
    assert entry["status"] == "incomplete" and entry["steps_done"] == 0


# --------------------------------------------------------------------------------------------
# SIGTERM is a first Ctrl-C: stop after the current step, write everything, exit 130.


def test_sigterm_stops_after_the_current_step_and_keeps_the_results(runs_dir: Path) -> None:
    with AafRun(runs_dir, *LONG) as run:
        folder = run.training()
        time.sleep(1.0)  # train some steps past step 0
        run.send(signal.SIGTERM)
        code = run.wait()
    assert code == 130, run.stderr
    assert STOPPING in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert run.stdout.strip() == str(folder)
    summary = assert_complete(folder)
    assert summary is not None
    assert summary["status"] == "interrupted"
    assert summary["steps"] == LONG_STEPS
    assert 0 < summary["steps_done"] < LONG_STEPS
    assert metrics_end(folder) == {summary["steps_done"]}
    for name in ("timing.csv", "loss_curves.png", "fit.png", "slopes.png", "summary.json"):
        assert (folder / name).is_file(), name
    assert aaf_list(runs_dir)[str(folder)]["status"] == "interrupted"


# --------------------------------------------------------------------------------------------
# Two runs of the same config started at the same moment get a folder each.


def _placeholders(runs_dir: Path, name: str, seconds: int) -> list[Path]:
    """Empty folders named like runs of ``name`` for the next ``seconds`` seconds: every run
    started meanwhile clashes with one and has to take a ``-2`` (or later) suffix."""
    now = datetime.now()
    made = []
    for k in range(seconds):
        stamp = (now + timedelta(seconds=k)).strftime("%Y-%m-%d_%H-%M-%S")
        path = runs_dir / f"{stamp}_{name}"
        try:
            path.mkdir()
        except FileExistsError:  # a real run of that second
            continue
        made.append(path)
    return made


def test_concurrent_runs_of_one_config_get_a_folder_each(runs_dir: Path) -> None:
    printed: list[Path] = []
    forced: list[Path] = []
    for round_ in range(2):
        # The second round forces the clash: both runs race for the same "-2" name.
        placeholders = _placeholders(runs_dir, "smoke", 600) if round_ == 1 else []
        # Untuned: the folders are what is raced for, not the numbers.
        with (
            AafRun(runs_dir, "--set", "tune=off") as first,
            AafRun(runs_dir, "--set", "tune=off") as second,
        ):
            codes = [first.wait(), second.wait()]
        for placeholder in placeholders:
            placeholder.rmdir()  # still empty: no run wrote into it
        assert codes == [0, 0], first.stderr + second.stderr
        folders = [Path(first.stdout.strip()), Path(second.stdout.strip())]
        assert folders[0] != folders[1]
        printed += folders
        if placeholders:
            forced = folders

    assert len(set(printed)) == len(printed) == 4
    on_disk = sorted(p for p in runs_dir.iterdir() if p.is_dir())
    assert on_disk == sorted(printed)
    by_stamp: dict[str, list[str]] = {}
    for folder in printed:
        assert folder.parent == runs_dir
        summary = assert_complete(folder)
        assert summary is not None and summary["status"] == "completed"
        assert summary["folder"] == folder.name
        match = FOLDER_PATTERN.match(folder.name)
        assert match is not None, folder.name
        by_stamp.setdefault(match.group(1), []).append(match.group(2))
    for stamp, names in by_stamp.items():
        # One second's runs: smoke, smoke-2, smoke-3... with no gap (or from -2 up when the
        # base name was taken by a placeholder).
        start = 1 if "smoke" in names else 2
        expected = ["smoke" if k == 1 else f"smoke-{k}" for k in range(start, start + len(names))]
        assert sorted(names, key=_suffix) == expected, (stamp, names)
    for folder in forced:
        match = FOLDER_PATTERN.match(folder.name)
        assert match is not None and _suffix(match.group(2)) >= 2, folder.name
    assert all(e["status"] == "completed" for e in aaf_list(runs_dir).values())


def _suffix(name: str) -> int:
    head, _, tail = name.rpartition("-")
    return int(tail) if head and tail.isdigit() else 1
