"""The Ray executor: each packed job of a sweep is one Ray task, on this machine or a cluster.

``RayExecutor`` connects in its constructor, so that every error (Ray not installed, an
unreachable address) comes before the sweep folder exists: no address starts a local Ray
instance for the sweep (stopped in ``close``), ``auto`` joins the cluster that ``ray start``
runs on this machine, ``HOST:PORT`` the one whose head listens there. Tasks return their
points' results (``packing.train_pack``) and the driver writes every folder, so the nodes need
the same ``aaf`` installed but no shared filesystem.

Threads: ``parallel`` jobs run at once (``--max-parallel``, default one per CPU Ray offers);
each task reserves ``cpus`` CPUs (``task_threads``: the most that let ``parallel`` tasks, or
as many as there are jobs if fewer, fit on the nodes at once) and trains on at most that many
threads, so parallel tasks never oversubscribe a node's cores (idle OpenMP threads spinning
beside a busy process made runs 20x slower here). A task whose worker process dies (killed, out
of memory) is retried ``RETRIES`` times by Ray; a job that still fails reports a one-line error
and the other jobs go on. A task Ray has lost (in flight for the driver while every CPU of the
cluster stays free for ``LOST_SECONDS``: Ray dropped its request for a worker, as seen here once
in a few test runs) is cancelled and submitted again, within the same ``RETRIES``: a sweep ends,
it never waits forever.

Ray is imported only here, and only when the executor is made: ``aaf`` works without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aaf_cli.errors import AafError, UsageError

if TYPE_CHECKING:
    from aaf_cli.budget import ThreadChoice
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.sweeps.local import Job, Outcome

#: Times Ray reruns a task whose worker process died (a task that raises is not rerun).
RETRIES = 3
#: How often the driver checks ``stop`` (Ctrl-C) while tasks run, in seconds.
POLL_SECONDS = 0.2
#: Tasks in flight while every CPU of the cluster stays free this long are lost: submitted
#: again. A running task reserves its CPUs; one waiting for a worker process waits seconds.
LOST_SECONDS = 60.0
#: Connecting to ``HOST:PORT``: the TCP connect and the first reply, each at most this long.
PROBE_SECONDS = 5.0
#: Joining a reachable cluster: how long Ray may retry before it gives up.
JOIN_SECONDS = 10
INSTALL = "pip install 'aaf[ray]'"

#: What a task returns: its points' results, or the one-line error of an aaf error.
TaskOutcome = tuple["list[ExperimentResult] | None", "str | None"]


def task_threads(node_cpus: Sequence[float], parallel: int) -> int:
    """The CPUs (and threads) of each task: the most ``t`` for which ``parallel`` tasks of
    ``t`` CPUs fit on nodes with these CPU counts at once; 1 when not even that fits (the
    tasks then queue). Pure, so the rule can be tested."""
    cpus = [int(c) for c in node_cpus if c >= 1]
    for t in range(max(cpus, default=1), 1, -1):
        if sum(c // t for c in cpus) >= parallel:
            return t
    return 1


def job_threads(configs: Sequence[ExperimentConfig], cpus: int) -> ThreadChoice:
    """The threads a task of ``cpus`` CPUs trains a job on: ``threads: auto`` as ``aaf run``
    chooses it on a machine of ``cpus`` free cores (one thread for a small workload), a
    number no more than ``cpus``."""
    from aaf_cli.budget import ThreadChoice, choose_threads, workload

    requested = configs[0].threads
    where = f"a Ray task reserving {cpus} CPU{'s' if cpus > 1 else ''}"
    if requested == "auto":
        flops = sum(workload(c).step_flops for c in configs)
        choice = choose_threads("auto", flops, cpus, None)
        return ThreadChoice(requested, choice.threads, f"{choice.reason} ({where})", cpus, None)
    threads = max(1, min(int(requested), cpus))
    return ThreadChoice(requested, threads, f"set in the config, at most {where}", cpus, None)


def train_job(
    configs: list[ExperimentConfig],
    labels: list[str],
    threads: ThreadChoice,
    version: str,
    argv: str,
) -> TaskOutcome:
    """The body of a Ray task, on a worker: train one job (``packing.train_pack``) on the
    threads ``threads`` chose. An aaf error comes back as its one-line message (aaf's errors
    do not all survive pickling); anything else reaches the driver as a RayTaskError."""
    os.environ["OMP_NUM_THREADS"] = str(threads.threads)  # before this worker imports torch
    import aaf_cli

    node = f"{socket.gethostname()}"
    try:
        import ray

        node += f" {ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:  # not in a Ray worker (called directly)
        pass
    if aaf_cli.__version__ != version:
        return None, (
            f"the Ray node {node} runs aaf {aaf_cli.__version__}, the driver aaf {version}: "
            "install the same aaf on every node"
        )
    from aaf_cli.sweeps.packing import train_pack

    try:
        # The choice itself, not its count: an ``auto`` one keeps its guard on the worker.
        results = train_pack(configs, labels=labels, threads=threads)
    except AafError as exc:
        return None, str(exc)
    for result in results:
        result.environment["argv"] = argv  # the sweep's command, not the Ray worker's
        result.environment.update(threads.record())  # why: the task's share of its node
        result.environment["ray_node"] = node
    return results, None


def failure(exc: BaseException) -> str:
    """One line for a task that failed in Ray: its worker died, its node died, a bug."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        first = (str(cause).strip().splitlines() or [""])[0][:300]
        return f"internal error in the Ray task ({type(cause).__name__}: {first})"
    tries = f"{RETRIES + 1} tr{'y' if RETRIES == 0 else 'ies'}"
    if isinstance(exc, rex.OutOfMemoryError):
        return f"Ray's memory monitor killed its worker: out of memory ({tries})"
    if isinstance(exc, rex.WorkerCrashedError):
        return f"the Ray worker running it died ({tries}; killed, or out of memory?)"
    if isinstance(exc, rex.NodeDiedError | rex.LocalRayletDiedError):
        return "the Ray node running it died"
    if isinstance(exc, rex.TaskCancelledError):
        return "its Ray task was cancelled"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"Ray failed it ({type(exc).__name__}: {first})"


def lost(tries: int) -> str:
    """One line for a job whose task Ray lost every time it was submitted."""
    return (
        f"Ray lost its task {tries} times (in flight, yet every CPU of the cluster free for "
        f"{LOST_SECONDS:g} s each time)"
    )


class LostTasks:
    """Tells when tasks in flight are lost: the cluster has kept every CPU free for
    ``seconds`` while they were in flight (a running task reserves its CPUs). It asks Ray at
    most once a second. Other drivers' tasks on a shared cluster can only hide a loss, never
    make one up."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.since: float | None = None  # when every CPU was first seen free
        self.asked = -1.0

    def lost(self, in_flight: int) -> bool:
        """Whether the ``in_flight`` tasks are lost now (then the clock starts again)."""
        import ray

        now = time.monotonic()
        if in_flight == 0:
            self.since = None
            return False
        if now - self.asked < 1.0:
            return False
        self.asked = now
        free = float(ray.available_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
        total = float(ray.cluster_resources().get("CPU", 0.0))  # type: ignore[no-untyped-call]
        if free < total:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        if now - self.since < self.seconds:
            return False
        self.since = None
        return True


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` too) as a pair; a UsageError otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"--ray-address must be auto or HOST:PORT of a Ray head node (got {address!r})"
        )
    return host, int(port)


def probe(host: str, port: int, timeout: float = PROBE_SECONDS) -> str | None:
    """Why ``HOST:PORT`` is no Ray head node (its GCS, a gRPC server), or None when it answers
    as one: a TCP connect, then the HTTP/2 preface, to which a gRPC server replies with a
    SETTINGS frame. Each step waits at most ``timeout`` seconds, where ``ray.init`` would
    retry for minutes."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            # The client preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
            reply = b""
            while len(reply) < 9:
                chunk = sock.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:  # socket.timeout
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)
    if len(reply) < 9 or reply[3] != 4:
        return "it does not answer as a Ray head node (its GCS port: 6379 unless ray start --port)"
    return None


def _init_arguments(address: str | None) -> dict[str, Any]:
    """``ray.init``'s arguments for ``address``, checked: a UsageError for a malformed or
    unreachable ``HOST:PORT``, before anything waits on Ray."""
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        from aaf_cli.budget import usable_cores

        # "local", not None: RAY_ADDRESS or a cluster running here must not be joined.
        kwargs.update(address="local", num_cpus=usable_cores(), include_dashboard=False)
    elif address == "auto":  # the cluster ray start runs here (or RAY_ADDRESS)
        kwargs["address"] = "auto"
    else:
        host, port = split_address(address)
        why = probe(host, port)
        if why is not None:
            raise UsageError(f"--ray-address {address}: no Ray cluster there: {why}")
        kwargs["address"] = address
    return kwargs


def _init(kwargs: dict[str, Any], where: str) -> None:
    """``ray.init``, its errors as one line. Joining a cluster, Ray's core logs each failed
    try on stderr for ``JOIN_SECONDS`` (a missing token, say): held back, and shown only if it
    connects. ``ray.init`` also replaces the SIGTERM handler (with sys.exit): the caller's is
    put back (aaf's CLI stops after the current step on SIGTERM)."""
    import ray

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    joining = kwargs.get("address") != "local"
    held: contextlib.AbstractContextManager[list[str]] = (
        _held_stderr() if joining else contextlib.nullcontext([])
    )
    # How long node.py retries the GCS (default 20 tries, a second apart); the user's wins.
    wait_key = "RAY_gcs_server_port_wait_time_s"
    added = joining and wait_key not in os.environ
    if added:
        os.environ[wait_key] = str(JOIN_SECONDS)
    try:
        with held as text:
            ray.init(**kwargs)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        chain: list[BaseException] = [exc]
        while chain[-1].__cause__ is not None and len(chain) < 10:
            chain.append(chain[-1].__cause__)
        logged = "".join(text)
        if "InvalidAuthToken" in logged or any(
            "InvalidAuthToken" in str(e) or "AuthenticationError" in repr(e) for e in chain
        ):
            first = (
                "the cluster wants token authentication: set RAY_AUTH_MODE=token, with its "
                "token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
            )
        if kwargs.get("address") == "auto" and "Could not find any running Ray" in first:
            first = "no Ray cluster runs on this machine (start one: ray start --head)"
        raise UsageError(f"--executor ray: cannot connect to {where}: {first}") from None
    finally:
        if added:
            del os.environ[wait_key]
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if "".join(text).strip():
        sys.stderr.write("".join(text))
    _raylet_messages_to_stderr()


@contextlib.contextmanager
def _held_stderr() -> Iterator[list[str]]:
    """File descriptor 2 (where Ray's C++ core logs) into a temporary file; its text is
    appended to the yielded list on exit."""
    text: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text.append(held.read().decode(errors="replace"))


def _raylet_messages_to_stderr() -> None:
    """Ray prints its raylet's messages to the driver (a worker died, a task is retried) on
    stdout, where ``aaf sweep`` prints the sweep folder for scripts: send them to stderr.
    (A private function of Ray; left alone where it is not there.)"""
    try:
        from ray._private import worker
    except ImportError:
        return
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "aaf_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr.aaf_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


class RayExecutor:
    """Jobs as Ray tasks, at most ``parallel`` at once (see the module's docstring).

    Raises:
        UsageError: Ray not installed; a bad or unreachable address; a cluster without CPUs;
            ``max_parallel`` below 1.
    """

    def __init__(self, address: str | None, max_parallel: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError(f"--executor ray needs Ray: {INSTALL}") from None
        if max_parallel is not None and max_parallel < 1:
            raise UsageError(f"--max-parallel must be at least 1 (got {max_parallel})")
        self.owned = False  # whether close() disconnects (or stops the instance it started)
        self.running = 0  # tasks in flight (while run() reports a finished one)
        self.cpus = 1  # CPUs each task of the current run() reserves
        kwargs = _init_arguments(address)
        if ray.is_initialized():  # a Python caller's own ray.init: use that connection
            if address is not None:
                raise UsageError(
                    "this process is already connected to Ray: leave --ray-address out to "
                    "use that connection"
                )
        else:
            _init(kwargs, address or "a local Ray instance")
            self.owned = True
        try:
            alive = [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
            nodes = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in alive]
            if sum(nodes) < 1:
                raise UsageError(f"--executor ray: the Ray cluster at {address} has no CPUs")
            self.parallel = max_parallel or int(sum(nodes))
            self.node_cpus = nodes
        except BaseException:
            self.close()
            raise
        self.nodes = len(nodes)
        # One node (a local instance, mostly): a pack trains as one task on the node's cores,
        # as the local executor trains it, and then its folders are written by a process per
        # core. Split in tasks of one core each, it trained 15% faster but the first task's
        # folders had to be written on one core while the other trained (1.6x the wall time
        # of local packing). On several nodes, a pack is split so that every node trains.
        self.local = self.nodes == 1
        self.parts = 1 if self.local else self.parallel

    def task_cpus(self, jobs: int) -> int:
        """The CPUs (and threads) of each task when ``jobs`` jobs are to run: a single job
        gets a whole node, not the share it would have beside ``parallel`` - 1 others."""
        return task_threads(self.node_cpus, max(1, min(self.parallel, jobs)))

    def writers(self) -> int | None:
        """Processes that may write a finished job's folders now: every usable core when no
        task is in flight; on one node, the cores its running tasks leave; on a cluster
        (whose tasks may run here too), one."""
        if self.running == 0:
            return None
        if not self.local:
            return 1
        from aaf_cli.budget import usable_cores

        return max(1, usable_cores() - self.cpus * self.running)

    def close(self) -> None:
        """Disconnect; a local instance started for the sweep stops with it."""
        if self.owned:
            import ray

            ray.shutdown()
            self.owned = False

    def run(
        self,
        jobs: Sequence[Job],
        begin: Callable[[Job], None],
        done: Outcome,
        stop: Callable[[], bool] | None,
    ) -> bool:
        """Submit the jobs, at most ``parallel`` at once; report each as it finishes. On
        ``stop`` (Ctrl-C), cancel the running tasks and return True: their points are left
        pending (folders removed), the finished ones are written."""
        import ray

        cpus = self.cpus = self.task_cpus(len(jobs))
        task = ray.remote(train_job).options(
            num_cpus=cpus, max_retries=RETRIES, retry_exceptions=False
        )
        queue = list(jobs)
        running: dict[Any, Job] = {}
        lost_tries: dict[int, int] = {}  # id(job): times its task was lost
        version = _version()
        argv = " ".join(sys.argv)
        watch = LostTasks(LOST_SECONDS)

        def submit(job: Job) -> None:
            threads = job_threads(job.configs, cpus)
            ref = task.remote(list(job.configs), list(job.labels), threads, version, argv)
            running[ref] = job

        try:
            while queue or running:
                if stop is not None and stop():
                    self._cancel(running)
                    return True
                while queue and len(running) < self.parallel:
                    job = queue.pop(0)
                    begin(job)
                    submit(job)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
                if ready:  # all that have finished: none waits while another's are written
                    ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                finished = [(ref, running.pop(ref)) for ref in ready]
                if not finished and watch.lost(len(running)):
                    for ref, job in list(running.items()):
                        with contextlib.suppress(Exception):
                            ray.cancel(ref, force=True)
                        del running[ref]
                        tries = lost_tries[id(job)] = lost_tries.get(id(job), 0) + 1
                        if tries > RETRIES:
                            done(job, None, lost(tries))
                        else:
                            submit(job)
                self.running = len(running)
                for ref, job in finished:
                    try:
                        results, error = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        results, error = None, failure(exc)
                    done(job, results, error)
        except BaseException:
            self._cancel(running)
            raise
        finally:
            self.running = 0
        return False

    def _cancel(self, running: dict[Any, Job]) -> None:
        """Cancel the running tasks (their workers are killed) and remove the folders
        ``begin`` made for their points, which are then pending as before."""
        import shutil

        import ray

        for ref, job in running.items():
            with contextlib.suppress(Exception):  # finished meanwhile, or Ray already gone
                ray.cancel(ref, force=True)
            for folder in job.folders:
                shutil.rmtree(Path(folder), ignore_errors=True)
        running.clear()


def _version() -> str:
    import aaf_cli

    return aaf_cli.__version__
