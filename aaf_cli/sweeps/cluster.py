"""The Ray executor: each packed job of a sweep is one Ray task, on this machine or a cluster.

``RayExecutor`` connects and checks every node in its constructor, so that every error (Ray
not installed, an unreachable address, a node that cannot run the sweep) comes before the sweep
folder exists: no address starts a local Ray instance for the sweep (stopped in ``close``),
``auto`` joins the cluster that ``ray start`` runs on this machine, ``HOST:PORT`` the one whose
head listens there, ``ray://HOST:PORT`` its Ray Client server. ``preflight`` runs one small
task per node (``nodes.report``): its ``aaf`` must be the driver's code (file digests), from
its own install, with the driver's torch release and, where the points may use GPUs, working
CUDA devices; ``--ray-ship-code`` sends the driver's package with the job instead. Tasks return
their points' results compactly (``payload``) and the driver writes every folder, on writer
threads and a pool of processes (``WriterPool``) while other jobs train, so the nodes need no
shared filesystem and never wait for the figures. A job saves its training state to a
``CheckpointStore`` actor on the driver's node every ``CHECKPOINT_SECONDS``; a task that Ray
reruns resumes from there (``aaf_cli.resume``).

Threads: ``parallel`` jobs run at once (``--max-parallel``, default one per CPU Ray offers, or
per GPU when the jobs train on GPUs, one each);
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
import functools
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aaf_cli.errors import AafError, UsageError
from aaf_cli.resume import MemoryStore

if TYPE_CHECKING:
    from concurrent.futures import Future

    from aaf_cli.budget import ThreadChoice
    from aaf_cli.config import ExperimentConfig
    from aaf_cli.sweeps.local import Job, Outcome
    from aaf_cli.sweeps.writing import Item, WriterPool, Written

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
#: The scheme of a Ray Client address (``ray://HOST:10001``): the driver runs on the head.
CLIENT = "ray://"
#: The check of every node (``preflight``) waits at most this long for their answers.
PREFLIGHT_SECONDS = 120.0
#: A job saves its training state this often (seconds of training; ``resume.Checkpoints``):
#: a task rerun after its worker died loses at most this much. A save of a pack of 120 small
#: models with its curves is some 100 kB.
CHECKPOINT_SECONDS = 30.0
#: The checkpoint store actor's name starts so (``ray list actors`` shows it).
STORE_NAME = "aaf-checkpoints"

#: What a task returns: its points' results (``payload.encode``), or the one-line error of an
#: aaf error.
TaskOutcome = tuple["bytes | None", "str | None"]


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


class CheckpointStore(MemoryStore):
    """The Ray actor that keeps the jobs' checkpoints (``aaf_cli.resume``) while a sweep runs:
    on the driver's node, so a worker or node that dies loses none of them. Blobs by key, in
    memory; a job's are dropped when its results have come."""

    def drop(self, job: str) -> None:
        for key in [k for k in self.blobs if k.startswith(f"{job}/")]:
            del self.blobs[key]

    def size(self) -> int:
        return sum(len(b) for b in self.blobs.values())


class ActorStore:
    """A ``resume.Store`` over the ``CheckpointStore`` actor, for a task: a put waits until
    the blob is kept. The store lost (the driver's node died) is no checkpoint: the job trains
    on without, from where it is."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.lost = False

    def get(self, key: str) -> bytes | None:
        import ray

        if self.lost:
            return None
        try:
            blob: bytes | None = ray.get(self.actor.get.remote(key))
        except ray.exceptions.RayError:
            self.lost = True
            return None
        return blob

    def put(self, key: str, blob: bytes) -> None:
        import ray

        if self.lost:
            return
        try:
            ray.get(self.actor.put.remote(key, blob))
        except ray.exceptions.RayError:
            self.lost = True


@dataclass(frozen=True)
class Saving:
    """Where a job's task saves its training state: the store actor, the job's key in it and
    the seconds of training between saves (``resume.Checkpoints``)."""

    store: Any
    job: str
    every_seconds: float


def job_key(job: Job) -> str:
    """A job's name in the checkpoint store: its points (a retried task has the same)."""
    return "points " + ",".join(str(i) for i in job.pack.points)


def train_job(
    configs: list[ExperimentConfig],
    labels: list[str],
    threads: ThreadChoice,
    code: str,
    argv: str,
    saving: Saving | None = None,
) -> TaskOutcome:
    """The body of a Ray task, on a worker: train one job (``packing.train_pack``) on the
    threads ``threads`` chose; its results come back as a payload (``payload.encode``: what
    the folders read, compact). An aaf error comes back as its one-line message (aaf's errors
    do not all survive pickling); anything else reaches the driver as a RayTaskError. A worker
    whose aaf is not the driver's code (``code``: its digest; a node that joined after the
    check) trains nothing. With ``saving``, the training saves its state to the store now and
    then, and a rerun of the task (its worker died) resumes from the last save; the points'
    ``environment.resumed`` then says from which step."""
    os.environ["OMP_NUM_THREADS"] = str(threads.threads)  # before this worker imports torch
    node = f"{socket.gethostname()}"
    try:
        import ray

        node += f" {ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:  # not in a Ray worker (called directly)
        pass
    if own_code() != code:
        return None, (
            f"the Ray node {node} runs other aaf code than the driver's (it joined after the "
            "check?): install the driver's aaf there, or pass --ray-ship-code"
        )
    from aaf_cli.sweeps.packing import train_pack

    checkpoints = None
    if saving is not None:
        from aaf_cli.resume import Checkpoints

        store = ActorStore(saving.store)
        checkpoints = Checkpoints(store, saving.every_seconds, saving.job)
    try:
        # The choice itself, not its count: an ``auto`` one keeps its guard on the worker.
        results = train_pack(configs, labels=labels, threads=threads, checkpoints=checkpoints)
    except AafError as exc:
        return None, str(exc)
    resumed = "; ".join(
        f"training {k + 1} from step {stage.resumed_from} ({stage.steps_trained} steps trained "
        f"in this try, a checkpoint every {stage.every_steps} steps)"
        for k, stage in enumerate(checkpoints.stages if checkpoints is not None else [])
        if stage.resumed_from is not None
    )
    for result in results:
        result.environment["argv"] = argv  # the sweep's command, not the Ray worker's
        result.environment.update(threads.record())  # why: the task's share of its node
        result.environment["ray_node"] = node
        if resumed:  # a rerun of the task: where each of its trainings went on from
            result.environment["resumed"] = resumed
    from aaf_cli.sweeps.payload import encode

    try:
        return encode(results), None  # only what the folders read, compact
    except AafError as exc:  # over the size a task may send back
        return None, str(exc)


def failure(exc: BaseException) -> str:
    """One line for a task that failed in Ray: its worker died, its node died, a bug."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        first = (str(cause).strip().splitlines() or [""])[0][:300]
        where = f" on the Ray node at {exc.ip}" if getattr(exc, "ip", None) else ""
        return f"internal error in the Ray task{where} ({type(cause).__name__}: {first})"
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
    """``HOST:PORT`` (``[V6]:PORT`` too; ``ray://HOST:PORT``, a Ray Client server) as a
    pair; a UsageError otherwise."""
    host, sep, port = address.removeprefix(CLIENT).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            "--ray-address must be auto, HOST:PORT of a Ray head node or ray://HOST:PORT of "
            f"its Ray Client server (got {address!r})"
        )
    return host, int(port)


HEAD = "a Ray head node (its GCS port: 6379 unless ray start --port)"
CLIENT_SERVER = "a Ray Client server (ray start --ray-client-server-port)"


def probe(host: str, port: int, timeout: float = PROBE_SECONDS, server: str = HEAD) -> str | None:
    """Why ``HOST:PORT`` is no Ray head node (its GCS) or Ray Client server (both gRPC
    servers), or None when it answers as one: a TCP connect, then the HTTP/2 preface, to which
    a gRPC server replies with a SETTINGS frame. Each step waits at most ``timeout`` seconds,
    where ``ray.init`` would retry for minutes."""
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
        return f"it does not answer as {server}"
    return None


def _init_arguments(address: str | None) -> dict[str, Any]:
    """``ray.init``'s arguments for ``address``, checked: a UsageError for a malformed or
    unreachable ``HOST:PORT`` (or ``ray://HOST:PORT``), before anything waits on Ray."""
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        from aaf_cli.budget import usable_cores

        # "local", not None: RAY_ADDRESS or a cluster running here must not be joined.
        kwargs.update(address="local", num_cpus=usable_cores(), include_dashboard=False)
    elif address == "auto":  # the cluster ray start runs here (or RAY_ADDRESS)
        kwargs["address"] = "auto"
    else:
        client = address.startswith(CLIENT)
        why = probe(*split_address(address), server=CLIENT_SERVER if client else HEAD)
        if why is not None:
            raise UsageError(f"--ray-address {address}: no Ray cluster there: {why}")
        if client:  # Ray Client takes neither log argument
            return {"address": address, "logging_level": logging.ERROR}
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


@dataclass(frozen=True)
class Checked:
    """What ``preflight`` found: the nodes whose GPUs the tasks use, and their memory."""

    gpu_nodes: list[dict[str, Any]]  # as ``ray.nodes()`` lists them
    gpu_memory: int | None  # bytes of the smallest GPU a task gets; None: no GPU used


def wants_gpu(devices: Sequence[str]) -> str | None:
    """Which device setting asks for GPUs among the points' ``device`` values: ``cuda``
    (needs them), ``auto`` (uses them where the cluster has them), or None."""
    if "cuda" in devices:
        return "cuda"
    return "auto" if "auto" in devices else None


def preflight(
    alive: Sequence[dict[str, Any]],
    devices: Sequence[str],
    runtime_env: dict[str, Any] | None,
    timeout: float = PREFLIGHT_SECONDS,
) -> Checked:
    """Check every node that can run a task (``nodes.report``, one small task pinned to each,
    reserving no CPU; a GPU on a GPU node when the points may use one) against this driver's
    ``aaf`` (``runtime_env``: the job's, which ships it to the nodes, or None). Raises a
    UsageError naming each node that cannot run the sweep, or whose check did not answer
    within ``timeout`` seconds."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from aaf_cli.sweeps import nodes

    # By value: the check must run where aaf is missing or another version.
    ray.cloudpickle.register_pickle_by_value(nodes)  # type: ignore[no-untyped-call]
    local = nodes.Local.here(shipped=runtime_env is not None)
    gpu = wants_gpu(devices)
    cluster_gpus = sum(float(n.get("Resources", {}).get("GPU", 0.0)) for n in alive)
    if gpu == "cuda" and cluster_gpus < 1:
        raise UsageError(
            "device: cuda, but the Ray cluster has no GPU (its nodes offer CPUs only): use "
            "device: auto or cpu, or add GPU nodes"
        )
    driver_dirs = (os.path.abspath(os.curdir),)
    refs: dict[Any, dict[str, Any]] = {}
    for node in alive:
        resources = node.get("Resources", {})
        on_gpu = gpu is not None and float(resources.get("GPU", 0.0)) >= 1
        if float(resources.get("CPU", 0.0)) < 1 and not on_gpu:
            continue  # runs no task of the sweep (a head started with --num-cpus 0)
        options: dict[str, Any] = {
            "num_cpus": 0,
            "num_gpus": 1 if on_gpu else 0,
            "max_retries": 0,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        }
        ref = ray.remote(nodes.report).options(**options).remote("aaf_cli", on_gpu, driver_dirs)
        refs[ref] = {**node, "gpu": on_gpu}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
    gpu_nodes: list[dict[str, Any]] = []
    memory: list[int] = []
    bad: list[str] = []
    for ref, node in refs.items():
        name = nodes.name_of(node)
        if ref not in ready:
            ray.cancel(ref, force=True)
            bad.append(f"the Ray node {name} did not answer the check within {timeout:g} s")
            continue
        try:
            report = ray.get(ref)
        except ray.exceptions.RayError as exc:
            bad.append(f"the Ray node {name} could not run the check: {failure(exc)}")
            continue
        name = nodes.name_of({**node, **report})
        found = nodes.problems(report, local)
        seen = (report.get("devices") or {}) if node["gpu"] else {}
        if node["gpu"] and int(seen.get("cuda", 0)) < 1:
            given = float(node.get("Resources", {}).get("GPU", 0.0))
            found.append(
                f"Ray offers {given:g} GPU{'s' if given != 1 else ''} there, but {seen.get('why')}"
            )
        if found:
            bad.append(f"the Ray node {name}: {'; '.join(found)}")
        if node["gpu"]:
            gpu_nodes.append(node)
            memory += seen.get("memory", [])
    if len(bad) == 1:
        raise UsageError(bad[0])
    if bad:
        raise UsageError(f"{len(bad)} Ray nodes cannot run this sweep: " + " | ".join(bad))
    return Checked(gpu_nodes, min(memory) if memory else None)


def checkpoint_store() -> Any:
    """A ``CheckpointStore`` actor for one run of jobs, on this driver's node (reserving no
    CPU), so that the node of a task that dies never takes its checkpoints with it."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(CheckpointStore)
        .options(
            name=f"{STORE_NAME}-{uuid.uuid4().hex[:12]}",  # findable (ray list actors)
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=True),
        )
        .remote()
    )


def task_options(cpus: int, gpu: bool) -> dict[str, Any]:
    """What a job's task asks Ray for: ``cpus`` CPUs and, on a cluster whose GPUs the check
    saw work, one GPU (Ray then sets ``CUDA_VISIBLE_DEVICES`` to it, so ``cuda`` is that GPU
    in the task). A worker that dies is rerun; a task that raises is not."""
    return {
        "num_cpus": cpus,
        "num_gpus": 1 if gpu else 0,
        "max_retries": RETRIES,
        "retry_exceptions": False,
    }


def ship_code() -> dict[str, Any]:
    """The runtime environment that sends this driver's ``aaf`` package to the nodes (Ray
    uploads it once, by content hash; the workers import it first)."""
    import aaf_cli

    return {"py_modules": [str(Path(aaf_cli.__file__).parent)], "excludes": ["__pycache__"]}


@contextlib.contextmanager
def _ctrl_c_aborts() -> Iterator[None]:
    """Ctrl-C raises at once while it is on (connecting, checking the nodes): nothing has
    started that a stop request could let finish. The caller's handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class RayExecutor:
    """Jobs as Ray tasks, at most ``parallel`` at once (see the module's docstring).

    Raises:
        UsageError: Ray not installed; a bad or unreachable address; a cluster without CPUs;
            a node that cannot run the sweep (``preflight``); ``device: cuda`` on a cluster
            without GPUs; ``max_parallel`` below 1.
    """

    def __init__(
        self,
        address: str | None,
        max_parallel: int | None,
        *,
        ship: bool = False,
        devices: Sequence[str] = ("cpu",),
    ) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError(f"--executor ray needs Ray: {INSTALL}") from None
        if max_parallel is not None and max_parallel < 1:
            raise UsageError(f"--max-parallel must be at least 1 (got {max_parallel})")
        self.owned = False  # whether close() disconnects (or stops the instance it started)
        self.pool: Future[WriterPool] | None = None  # the writer processes of a ``run``
        runtime_env = ship_code() if ship else None
        self.notes: list[str] = []  # one line each, for the user (a GPU-less cluster)
        with _ctrl_c_aborts():
            kwargs = _init_arguments(address)
            if runtime_env is not None:  # a folder is uploaded only for the whole job
                kwargs["runtime_env"] = runtime_env
            if ray.is_initialized():  # a Python caller's own ray.init: use that connection
                if address is not None or ship:
                    option = "--ray-address" if address is not None else "--ray-ship-code"
                    raise UsageError(
                        f"this process is already connected to Ray: leave {option} out to "
                        "use that connection"
                    )
            else:
                try:
                    _init(kwargs, address or "a local Ray instance")
                except KeyboardInterrupt:  # Ctrl-C in the middle of ray.init
                    if ray.is_initialized():
                        ray.shutdown()
                    raise
                self.owned = True
            try:
                alive = [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
                cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in alive]
                if sum(cpus) < 1:
                    raise UsageError(f"--executor ray: the Ray cluster at {address} has no CPUs")
                checked = preflight(alive, devices, runtime_env)
            except BaseException:
                self.close()
                raise
        # GPUs: one per task, on the nodes whose check saw them work; packs sized to them.
        gpu_nodes = checked.gpu_nodes
        self.gpus = int(sum(float(n["Resources"].get("GPU", 0.0)) for n in gpu_nodes))
        self.memory = checked.gpu_memory  # None: this machine's memory sizes the packs
        if wants_gpu(devices) == "auto" and not self.gpus and address is not None:
            self.notes.append("the Ray cluster has no GPU: device auto trains on CPUs")
        if self.gpus:
            per_gpu = [
                float(n["Resources"].get("CPU", 0.0)) / float(n["Resources"]["GPU"])
                for n in gpu_nodes
            ]
            self.parallel = max_parallel or self.gpus
            self.node_cpus = [max(1.0, min(per_gpu))] * self.gpus
        else:
            self.parallel = max_parallel or int(sum(cpus))
            self.node_cpus = cpus
        nodes = len([c for c in cpus if c >= 1])
        # One node (a local instance, mostly): a pack trains as one task on the node's cores,
        # as the local executor trains it, and then its folders are written by a process per
        # core. Split in tasks of one core each, it trained 15% faster but the first task's
        # folders had to be written on one core while the other trained (1.6x the wall time
        # of local packing). On several nodes, a pack is split so that every node trains.
        self.local = nodes == 1 and not (address or "").startswith(CLIENT)
        self.parts = 1 if self.local else self.parallel

    def task_cpus(self, jobs: int) -> int:
        """The CPUs (and threads) of each task when ``jobs`` jobs are to run: a single job
        gets a whole node, not the share it would have beside ``parallel`` - 1 others."""
        return task_threads(self.node_cpus, max(1, min(self.parallel, jobs)))

    def write(self, items: Sequence[Item]) -> list[Written]:
        """Write a finished job's folders on the writer processes of this run (``run``
        reports its jobs, and so calls this, only while they are there)."""
        assert self.pool is not None, "write() outside run()"
        return self.pool.result().write(items)

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
        """Submit the jobs, at most ``parallel`` at once; report each as it finishes. Finished
        jobs are reported (their folders written) by a writer thread while the next jobs
        train: a node never waits for the driver's figures. On ``stop`` (Ctrl-C), cancel the
        running tasks and return True: their points are left pending (folders removed), the
        finished ones are written."""
        import ray

        cpus = self.task_cpus(len(jobs))
        task = ray.remote(train_job).options(**task_options(cpus, self.gpus > 0))
        queue = list(jobs)
        running: dict[Any, Job] = {}
        lost_tries: dict[int, int] = {}  # id(job): times its task was lost
        code = own_code()
        argv = " ".join(sys.argv)
        watch = LostTasks(LOST_SECONDS)
        from concurrent.futures import ThreadPoolExecutor

        from aaf_cli.budget import usable_cores
        from aaf_cli.sweeps.writing import WriterPool

        # Started beside the first jobs (its fork server imports the writing code for
        # seconds), so that its processes are ready (imports, fonts) when results come.
        starter = ThreadPoolExecutor(1, thread_name_prefix="aaf-writer-start")
        points = sum(len(job.folders) for job in jobs)
        self.pool = starter.submit(WriterPool, min(usable_cores(), max(points, 1)))
        starter.shutdown(wait=False)
        writer = Writer(done)
        store = checkpoint_store()
        every = CHECKPOINT_SECONDS

        def submit(job: Job) -> None:
            threads = job_threads(job.configs, cpus)
            saving = Saving(store, job_key(job), every)
            ref = task.remote(  # type: ignore[call-arg]
                list(job.configs), list(job.labels), threads, code, argv, saving
            )
            running[ref] = job

        try:
            while queue or running:
                writer.check()
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
                            writer.put(job, None, lost(tries))
                        else:
                            submit(job)
                for ref, job in finished:
                    try:
                        blob, error = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        blob, error = None, failure(exc)
                    store.drop.remote(job_key(job))  # its checkpoints are of no more use
                    writer.put(job, blob, error)
        except BaseException:
            self._cancel(running)
            raise
        finally:
            writer.close()  # every finished job is written, whatever ended the loop
            self.pool.result().close()
            self.pool = None
            with contextlib.suppress(Exception):  # its blobs go with it
                ray.kill(store)
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


class Writer:
    """Reports finished jobs (``done``: their folders written) on threads of its own, so that
    the driver submits the next jobs meanwhile; jobs that finish together are written together
    (their points share the executor's writer processes). An error in ``done`` (a full disk)
    is raised in the driver by the next ``check`` or by ``close``."""

    def __init__(self, done: Outcome) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from aaf_cli.budget import usable_cores

        self.done = done
        self.pool = ThreadPoolExecutor(usable_cores(), thread_name_prefix="aaf-writer")
        self.futures: list[Any] = []

    def put(self, job: Job, blob: bytes | None, error: str | None) -> None:
        """Report ``job`` with its payload (decoded on the writer's thread) or its error."""
        job = replace(job, finished=time.monotonic())  # its time ends now, not when written
        self.futures.append(self.pool.submit(self._report, job, blob, error))

    def _report(self, job: Job, blob: bytes | None, error: str | None) -> None:
        from aaf_cli.sweeps.payload import decode

        results = None
        if blob is not None:
            try:
                results = decode(blob)
            except AafError as exc:  # not a payload of this aaf (checked nodes make none)
                error = str(exc)
        self.done(job, results, error)

    def check(self) -> None:
        """Raise the error of a report that failed; forget the ones that succeeded."""
        finished: list[Any] = []
        pending: list[Any] = []
        for future in self.futures:  # one look each: one that ends meanwhile is in one list
            (finished if future.done() else pending).append(future)
        self.futures = pending
        for future in finished:
            future.result()

    def close(self) -> None:
        """Wait for every report put; raise the first error."""
        self.pool.shutdown(wait=True)
        futures, self.futures = self.futures, []
        for future in futures:
            future.result()


@functools.cache
def own_code() -> str:
    """The digest of this process's aaf sources (``nodes.digests``): the driver's is sent
    with every task, and a worker compares its own (once per worker process)."""
    import aaf_cli
    from aaf_cli.sweeps.nodes import digest, digests

    return digest(digests(Path(aaf_cli.__file__).parent))
