"""One driver per sweep folder (``sweeps.lock``): real processes and real locks, no mocks; and
the progress count of ``aaf sweep``."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aaf_cli.cli import app
from aaf_cli.errors import UsageError
from aaf_cli.sweeps.command import PointCount, point_line
from aaf_cli.sweeps.local import PointEvent
from aaf_cli.sweeps.lock import (
    LOCK_FILE,
    Holder,
    SweepLock,
    SweepLockWarning,
    names_inode,
    process_start,
)
from aaf_cli.sweeps.records import SWEEP_FILE

from .conftest import SMOKE

runner = CliRunner()
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOST = socket.gethostname()


def exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def holding(folder: Path) -> tuple[subprocess.Popen[str], int]:
    """A Python process that takes the folder's lock, forks a child that sleeps, and sleeps:
    the process and its child's pid. The child prints its pid once ``fork`` has returned in it
    (its at-fork handlers have run): on a loaded machine it may be scheduled long after the
    parent, and until then its copy of the descriptor would keep the lock."""
    script = textwrap.dedent("""
        import os, sys, time
        from aaf_cli.sweeps.lock import SweepLock
        lock = SweepLock(sys.argv[1]).acquire()
        if os.fork() == 0:
            print(os.getpid(), flush=True)
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def test_a_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = SweepLock(tmp_path).acquire()
    content = json.loads((tmp_path / LOCK_FILE).read_text())
    assert content["host"] == HOST and content["pid"] == os.getpid()
    assert content["start"] == process_start(os.getpid()) is not None
    with pytest.raises(UsageError) as refused:
        SweepLock(tmp_path).acquire()
    assert str(refused.value) == (
        f"{tmp_path} is in use by another aaf sweep (pid {os.getpid()} on host {HOST}, since "
        f"{content['since']}): wait for it, or stop it first"
    )
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    with SweepLock(tmp_path) as again:  # free once released
        assert again.held
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_dead_drivers_lock_is_taken_over_with_a_note(tmp_path: Path) -> None:
    dead = replace(Holder.me(), pid=exited_pid(), since="2026-01-02T03:04:05")
    (tmp_path / LOCK_FILE).write_text(dead.text())
    notes: list[str] = []
    with SweepLock(tmp_path, notes.append):
        assert notes == [
            f"took over the lock of {tmp_path} from aaf pid {dead.pid} on host {HOST} "
            "(started 2026-01-02T03:04:05), which is no longer running"
        ]
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()
    # A live pid with another start time is a reused pid, not the driver; no on_note: a warning.
    start = process_start(os.getpid())
    assert start is not None
    (tmp_path / LOCK_FILE).write_text(replace(Holder.me(), start=start - 1).text())
    with pytest.warns(SweepLockWarning, match="which is no longer running"):
        SweepLock(tmp_path).acquire().release()
    # An empty lock file (a driver killed before it wrote its name) is taken silently.
    (tmp_path / LOCK_FILE).write_text("")
    with SweepLock(tmp_path, notes.append):
        assert len(notes) == 1


def test_the_kernel_releases_a_killed_drivers_lock(tmp_path: Path) -> None:
    """SIGKILL leaves the file, not the lock; a child the driver forked does not keep it."""
    child, forked = holding(tmp_path)
    try:
        with pytest.raises(UsageError, match=f"pid {child.pid} on host {HOST}, since "):
            SweepLock(tmp_path).acquire()
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == child.pid
        notes: list[str] = []
        with SweepLock(tmp_path, notes.append):
            assert len(notes) == 1 and f"aaf pid {child.pid} on host {HOST}" in notes[0]
            assert notes[0].endswith("which is no longer running")
        os.kill(forked, 0)  # the forked child still runs: it did not keep the lock
    finally:
        child.kill()
        child.wait()
        os.kill(forked, signal.SIGKILL)


def test_a_lock_on_an_unlinked_file_is_not_taken(tmp_path: Path) -> None:
    """The unlink race: a driver that opened the lock file just before its holder released it
    (unlink, then close) can lock the orphaned inode; the path no longer names it."""
    first = SweepLock(tmp_path).acquire()
    late = os.open(tmp_path / LOCK_FILE, os.O_RDWR)  # opened while it was held
    try:
        first.release()
        fcntl.flock(late, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds: on the orphan
        assert not names_inode(tmp_path / LOCK_FILE, late)
        second = SweepLock(tmp_path).acquire()  # a new file, held for real
        assert names_inode(tmp_path / LOCK_FILE, second._fd or -1)
        with pytest.raises(UsageError, match="in use by another aaf sweep"):
            SweepLock(tmp_path).acquire()
        second.release()
    finally:
        os.close(late)


def test_resume_of_a_running_sweep_is_refused_then_takes_over_after_a_kill(
    tmp_path: Path,
) -> None:
    aaf_bin = Path(sys.executable).with_name("aaf")
    runs_dir = tmp_path / "runs"
    first = subprocess.Popen(
        [str(aaf_bin), "sweep", str(SMOKE), "--grid", "variants.1.n=1,2,5", "--set",
         "train.steps=2000", "--set", "tune=off", "--no-pack", "-q", "--runs-dir",
         str(runs_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        folders: list[Path] = []
        while not folders or not (folders[0] / "points" / "000").is_dir():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the sweep's first point did not start"
            time.sleep(0.05)
            folders = sorted(runs_dir.glob("*")) if runs_dir.is_dir() else []
        folder = folders[0]
        points = folder / "points"
        before = {p.name: p.stat().st_ino for p in points.iterdir()}  # its point folders
        refused = runner.invoke(app, ["sweep", "--resume", str(folder)])
        assert first.poll() is None, "the first sweep ended before the test: make it longer"
        assert refused.exit_code == 2, (refused.stdout, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert lines[0].startswith(f"Error: {folder} is in use by another aaf sweep (pid ")
        assert f"pid {first.pid} on host {HOST}, since " in lines[0]
        assert lines[0].endswith("): wait for it, or stop it first")
        for name, inode in before.items():  # the running driver's point folders are its own
            assert (points / name).stat().st_ino == inode
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == first.pid
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
        first.communicate()
    # The stale sweep.lock is no trouble to the commands that read sweep folders.
    listed = runner.invoke(app, ["list", "--runs-dir", str(runs_dir), "--json"])
    assert listed.exit_code == 0, listed.stderr
    assert [(e["kind"], e["folder"]) for e in json.loads(listed.stdout)] == [("sweep", str(folder))]
    shown = runner.invoke(app, ["show", str(folder)])
    assert shown.exit_code == 0 and "sweep.lock" not in shown.stdout, shown.stderr
    resumed = runner.invoke(app, ["sweep", "--resume", str(folder), "-q"])
    assert resumed.exit_code == 0, (resumed.stdout, resumed.stderr)
    note = resumed.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith(
        f"note: took over the lock of {folder} from aaf pid {first.pid} on host {HOST} (started "
    )
    assert note[0].endswith("), which is no longer running")
    assert resumed.stdout.strip() == str(folder)
    assert not (folder / LOCK_FILE).exists()
    assert sorted(p.name for p in points.iterdir()) == ["000", "001", "002"]
    assert "status: completed" in (folder / SWEEP_FILE).read_text()


def test_progress_counts_finished_points_in_the_order_they_end(tmp_path: Path) -> None:
    """Parallel jobs end in any order: ``[k/N]`` counts them; ``point i`` is the index."""
    count = PointCount()
    lines = []
    for phase, index in [("start", 0), ("start", 3), ("done", 3), ("start", 1), ("done", 0)]:
        event = PointEvent(phase, index, 4, f"n={index}", tmp_path, "completed", 1.0)
        finished = count(event)
        if phase == "done":
            lines.append(point_line(event, finished))
    assert lines == [
        "[1/4] point 3 (n=3): completed in 1.0 s",
        "[2/4] point 0 (n=0): completed in 1.0 s",
    ]
