"""One driver per sweep folder: ``sweep.lock``.

A driver (``run_sweep``) holds an exclusive ``flock`` on ``<sweep folder>/sweep.lock`` for as
long as it writes the folder. The kernel is what makes it correct: the lock goes when the
process goes, however it ends (SIGKILL included), and Linux NFS clients map ``flock`` to POSIX
locks that other hosts see. The file's content only names the holder, for the messages: its
host, pid, the process's start time (``/proc/<pid>/stat`` field 22, so that a reused pid is not
taken for the driver), when it took the lock and its command line.

- A second driver is refused (``UsageError``) with the holder's pid, host and time.
- A lock file whose process died without removing it is taken over, and said so (``on_note``).
- Released by unlinking the file, then closing it. A driver that opened the file just before it
  was unlinked may then lock the orphaned inode: after locking, the path must still name the
  inode locked, else it is opened again.

On a filesystem without file locks the content is the only guard: a holder on this host that is
still running (same pid and start time) is refused; one on another host cannot be checked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from aaf_cli.errors import RunError, UsageError

if sys.platform != "win32":  # Windows has no flock: there the content is the only guard
    import fcntl

LOCK_FILE = "sweep.lock"
#: flock errors that mean the filesystem has no locks (NFS without its lock daemon, some FUSE).
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
#: Tries to lock a file that another driver keeps unlinking under us (each one a new file).
ATTEMPTS = 50
#: How long a refused driver waits for the holder's content (the holder writes it just after
#: locking the file).
CONTENT_WAIT_S = 0.5


#: The descriptors of the locks this process holds. A forked child (the workers that write a
#: packed job's folders) closes its copies at once: the lock stays the parent's alone and goes
#: when the parent dies, not when its last child does.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class SweepLockWarning(UserWarning):
    """A stale lock was taken over (with no ``on_note``, the note is this warning)."""


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from field 3 (the state) on, or None where it cannot
    be read (no such process, no ``/proc``)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # Field 2 is the command name in parentheses, which may hold spaces and parentheses: the
    # fields after the last ")" start at field 3.
    return text.rsplit(")", 1)[-1].split()


def process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks after boot (``/proc/<pid>/stat`` field
    22), or None where it cannot be read."""
    fields = proc_stat(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """This boot's id (a start time in ticks only means something within one boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="utf-8").strip()
    except OSError:
        return None


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: the content of ``sweep.lock``."""

    host: str
    pid: int
    start: int | None  # process_start(pid) when it took the lock
    boot: str | None  # boot_id() then
    since: str  # when it took the lock, ISO local time
    command: str  # its command line

    @classmethod
    def me(cls) -> Holder:
        """This process."""
        argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            start=process_start(os.getpid()),
            boot=boot_id(),
            since=datetime.now().isoformat(timespec="seconds"),
            command=shlex.join(argv),
        )

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """The holder a lock file names, or None when it names none (empty, or not ours)."""
        try:
            data: Any = json.loads(text)
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                start=None if data.get("start") is None else int(data["start"]),
                boot=None if data.get("boot") is None else str(data["boot"]),
                since=str(data.get("since") or "?"),
                command=str(data.get("command") or ""),
            )
        except (ValueError, TypeError, KeyError):
            return None

    def text(self) -> str:
        return json.dumps(asdict(self)) + "\n"

    def describe(self) -> str:
        """``pid 1234 on host node1, since 2026-12-07T23:50:01``."""
        return f"pid {self.pid} on host {self.host}, since {self.since}"

    def running(self) -> bool | None:
        """Whether the process is still running: None on another host (it cannot be seen from
        here); a pid now used by a later process (another start time or boot) is not it."""
        if self.host != socket.gethostname():
            return None
        booted = boot_id()
        if self.boot is not None and booted is not None and self.boot != booted:
            return False
        start = process_start(self.pid)
        if start is not None:
            return self.start is None or start == self.start
        if Path("/proc/self/stat").exists():
            return False  # /proc is there and the pid is not
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True  # someone else's process: it exists
        return True


def names_inode(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not unlinked or replaced since)."""
    try:
        named, opened = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _read(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 65536).decode("utf-8", errors="replace")
    except OSError:
        return ""


class SweepLock:
    """The lock of one sweep folder: ``with SweepLock(folder):`` (or ``acquire``/``release``).
    Like an open file, a lock that is dropped (garbage-collected) is released: keep it.

    Args:
        folder: the sweep folder (it must exist).
        on_note: told, in one line, that a stale lock was taken over (default: a
            ``SweepLockWarning``).

    Raises (``acquire``):
        UsageError: another driver holds it (the message names its pid, host and time).
        RunError: the lock file cannot be made (a read-only folder).
    """

    def __init__(self, folder: Path, on_note: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.on_note = on_note
        self._fd: int | None = None
        self._owner = 0  # the pid that took it (a forked child must not release it)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> SweepLock:
        """Take the lock, or raise; returns itself."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this lock")
        for _ in range(ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except OSError as exc:
                raise RunError(f"{self.folder}: cannot make {LOCK_FILE} ({exc.strerror})") from None
            try:
                taken = self._take(fd)
            except BaseException:
                os.close(fd)
                raise
            if taken:
                return self
            os.close(fd)  # unlinked by its last holder after we opened it: open the new one
        raise RunError(f"{self.folder}: cannot take {LOCK_FILE} (it keeps being replaced)")

    def _take(self, fd: int) -> bool:
        """Lock ``fd`` and write ours into it: False when ``fd`` is no longer the lock file."""
        locked = sys.platform != "win32"
        if sys.platform != "win32":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._refusal(fd) from None
            except OSError as exc:
                if exc.errno not in UNSUPPORTED:
                    raise RunError(
                        f"{self.folder}: cannot lock {LOCK_FILE} ({exc.strerror})"
                    ) from None
                locked = False
        if not names_inode(self.path, fd):
            return False
        previous = Holder.parse(_read(fd))
        running = previous.running() if previous is not None else None
        if not locked and running:
            raise self._refusal(fd)
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, Holder.me().text().encode("utf-8"))
        except OSError as exc:
            raise RunError(f"{self.folder}: cannot write {LOCK_FILE} ({exc.strerror})") from None
        self._fd, self._owner = fd, os.getpid()
        _HELD.add(fd)
        if previous is not None:
            why = "which is no longer running" if running is False else "which no longer holds it"
            self._note(
                f"took over the lock of {self.folder} from aaf pid {previous.pid} on host "
                f"{previous.host} (started {previous.since}), {why}"
            )
        return True

    def _refusal(self, fd: int) -> UsageError:
        deadline = time.monotonic() + CONTENT_WAIT_S
        holder = Holder.parse(_read(fd))
        while holder is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the holder has the lock and is about to write its name
            holder = Holder.parse(_read(fd))
        who = f" ({holder.describe()})" if holder is not None else ""
        return UsageError(
            f"{self.folder} is in use by another aaf sweep{who}: wait for it, or stop it first"
        )

    def _note(self, message: str) -> None:
        if self.on_note is not None:
            self.on_note(message)
        else:
            warnings.warn(message, SweepLockWarning, stacklevel=4)

    def release(self) -> None:
        """Remove the lock file (if it is still ours), then close it: the kernel lock goes with
        the close. Nothing held, or held by the process this one was forked from: nothing."""
        fd, self._fd = self._fd, None
        if fd is None or os.getpid() != self._owner:
            return  # a forked child closed its copy when it started
        _HELD.discard(fd)
        try:
            if names_inode(self.path, fd):
                self.path.unlink()
        except OSError:
            pass  # a folder removed meanwhile: the close still releases the lock
        finally:
            os.close(fd)

    def __del__(self) -> None:
        # A lock dropped without release (an exception between acquire and the release's
        # finally): its file descriptor is closed, or this process would keep the lock.
        if self._fd is not None:
            self.release()

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
