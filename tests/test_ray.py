"""The Ray executor on real Ray, no mocks: a local instance, a two-node cluster on this
machine, a worker killed in the middle of a point, a driver killed in the middle of a sweep,
and the bad input of ``--executor ray``.

Ray starts in seconds, so most sweeps here share one local instance started in this process
(``local_ray``): ``RayExecutor`` without an address uses a connection the caller already has.
The subprocess tests start their own and check that nothing of it is left behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

import aaf_cli as aaf  # noqa: E402
from aaf_cli.cli import app  # noqa: E402
from aaf_cli.sweeps import cluster  # noqa: E402
from aaf_cli.sweeps.cluster import (  # noqa: E402
    job_threads,
    probe,
    split_address,
    task_threads,
)
from aaf_cli.sweeps.local import PointEvent  # noqa: E402

from .conftest import SMOKE  # noqa: E402

# One test process runs every Ray test (pytest-xdist: a module per process, and this group
# under --dist loadgroup too): they start clusters of their own, and a test that kills a Ray
# worker must not see another test's.
pytestmark = pytest.mark.xdist_group("ray")
runner = CliRunner()
AAF = Path(sys.executable).with_name("aaf")
RAY = Path(sys.executable).with_name("ray")
# float64, so that equal numbers are equal bytes; enough steps that a point takes a moment.
BASE = ["train.steps=300", "seeds=2", "dtype=float64"]
GRID = {"train.lr": [0.01, 0.03], "variants.1.n": [1, 5]}
GRID_ARGS = ["--grid", "train.lr=0.01,0.03", "--grid", "variants.1.n=1,5"]
POINTS = ("000", "001", "002", "003")
# A point long enough (a couple of seconds) to kill its worker in the middle of it.
# Untuned: these tests kill and stop the job's own training.
LONG = ["train.steps=3000", "seeds=2", "dtype=float64", "tune=off"]


# Every fork of this process (os.fork, a fork-context pool), from here on.
FORKS: list[float] = []
os.register_at_fork(before=lambda: FORKS.append(time.monotonic()))


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def metrics(folder: Path, points: tuple[str, ...] = POINTS) -> dict[str, bytes]:
    return {p: (folder / "points" / p / "metrics.csv").read_bytes() for p in points}


def summary(folder: Path, point: str) -> dict[str, object]:
    data = json.loads((folder / "points" / point / "summary.json").read_text())
    assert isinstance(data, dict)
    return data


def processes() -> dict[int, str]:
    """Every process's command line (its title, for a Ray worker: ``ray::train_job``)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            out[int(entry.name)] = cmd
    return out


def holders(pattern: re.Pattern[str]) -> dict[int, str]:
    """Processes whose command line, or a file they hold open, matches ``pattern`` (a Ray
    session's processes hold its log files open; some change their title)."""
    found = {}
    for pid, cmd in processes().items():
        try:
            fd_dir = Path(f"/proc/{pid}/fd")
            files = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        if pattern.search(cmd) or any(pattern.search(f) for f in files):
            found[pid] = cmd
    return found


def left_behind(
    pattern: re.Pattern[str], wait_s: float = 20.0, allowed: frozenset[str] = frozenset()
) -> dict[int, str]:
    """``holders(pattern)`` still there after up to ``wait_s`` seconds (sooner when all that
    is left has a title in ``allowed``)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = holders(pattern)
        if set(found.values()) <= allowed or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


class Killer(threading.Thread):
    """SIGKILLs the first Ray worker seen running a job (title ``ray::train_job``), once it
    has run for ``after_s`` (inside training: the worker imported torch in an earlier test),
    or, with ``saved``, once the sweep's checkpoint store holds a checkpoint."""

    def __init__(self, after_s: float = 0.6, saved: bool = False) -> None:
        super().__init__(daemon=True)
        self.after_s, self.saved = after_s, saved
        self.killed: int | None = None
        self.done = threading.Event()

    def ready(self) -> bool:
        """Whether a checkpoint store of this process's Ray job holds a blob."""
        for name in ray.util.list_named_actors():
            if name.startswith(cluster.STORE_NAME):
                with contextlib.suppress(Exception):  # gone meanwhile
                    if ray.get(ray.get_actor(name).size.remote(), timeout=5) > 0:
                        return True
        return False

    def run(self) -> None:
        first_seen: dict[int, float] = {}
        while not self.done.is_set():
            now = time.monotonic()
            for pid, cmd in processes().items():
                if not cmd.startswith("ray::train_job"):
                    continue
                if self.saved:
                    due = self.ready()
                else:
                    due = now - first_seen.setdefault(pid, now) >= self.after_s
                if due:
                    os.kill(pid, signal.SIGKILL)
                    self.killed = pid
                    return
            time.sleep(0.02)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance (2 CPUs) for this module's in-process sweeps."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
    assert left_behind(session_of(os.getpid())) == {}


def session_of(pid: int) -> re.Pattern[str]:
    """The files of the local Ray instance that process ``pid`` started."""
    return re.compile(rf"/session_[\d_-]+_{pid}/")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The 2x2 grid's metrics.csv per point, from the local executor."""
    swept = aaf.sweep(SMOKE, grid=GRID, overrides=BASE, runs_dir=tmp_path_factory.mktemp("local"))
    assert swept.status == "completed" and swept.folder is not None
    return metrics(swept.folder)


def test_task_threads_fit_parallel_tasks_on_the_nodes() -> None:
    assert task_threads([2.0], 2) == 1  # this machine, a job per core
    assert task_threads([2.0], 1) == 2
    assert task_threads([1.0, 1.0], 2) == 1  # the two-node test cluster
    assert task_threads([16.0, 4.0], 2) == 8  # both tasks on the big node, 8 cores each
    assert task_threads([16.0, 4.0], 5) == 4  # 4 + 1 tasks of 4 cores
    assert task_threads([8.0, 8.0], 3) == 4
    assert task_threads([2.0], 8) == 1  # more jobs than cores: they queue
    assert task_threads([0.0, 4.0], 2) == 2  # a head node without CPUs runs nothing
    # A task never trains on more threads than it reserved; a small workload on one.
    small = aaf.load_config(SMOKE)
    assert job_threads([small], 4).threads == 1
    assert "small workload" in job_threads([small], 4).reason
    assert job_threads([small.model_copy(update={"threads": 8})], 4).threads == 4
    assert job_threads([small.model_copy(update={"threads": 3})], 4).threads == 3


def test_gpu_jobs_are_sized_by_the_smallest_gpu() -> None:
    """Which settings ask for GPUs, and packs sized by a GPU's memory instead of this
    machine's: the same 20 points make more jobs on a small GPU."""
    from aaf_cli.sweeps.local import plan_jobs
    from aaf_cli.sweeps.spec import plan_sweep

    assert cluster.wants_gpu(["cpu"]) is None
    assert cluster.wants_gpu(["auto", "cpu"]) == "auto"
    assert cluster.wants_gpu(["auto", "cuda"]) == "cuda"
    assert cluster.task_options(4, True)["num_gpus"] == 1
    assert cluster.task_options(4, False)["num_gpus"] == 0
    plan = plan_sweep(
        None, grid={"variants.1.n": [1, 2, 5, 10, 20], "train.lr": [1e-3, 3e-3, 1e-2, 3e-2]},
        overrides=["seeds=50"],
    )  # fmt: skip
    roomy = plan_jobs(plan, None, True, 1, memory=2**40)
    small = plan_jobs(plan, None, True, 1, memory=2**26)  # 64 MiB
    assert len(roomy) == 1 and len(small) > 1
    assert sorted(i for p in small for i in p.points) == list(range(20))


def test_a_single_job_gets_the_whole_node(local_ray: None) -> None:
    """The CPUs a task reserves follow the jobs there are: one job alone takes both CPUs of
    the 2-CPU instance (and trains on two threads if its workload asks for them), where
    two or more share them."""
    from aaf_cli.sweeps.cluster import RayExecutor

    executor = RayExecutor(None, None)  # joins this process's connection
    assert not executor.owned and executor.parallel == 2
    assert executor.local and executor.parts == 1  # one node: packs are not split
    assert executor.task_cpus(1) == 2
    assert executor.task_cpus(2) == executor.task_cpus(20) == 1
    big = aaf.load_config(None, ["seeds=60"])  # 134 MFLOP per step: wants 3 threads
    assert job_threads([big], executor.task_cpus(1)).threads == 2
    one = job_threads([big], executor.task_cpus(3))
    assert one.threads == 1 and "small workload" not in one.reason


def test_probe_tells_a_ray_head_from_other_ports(local_ray: None) -> None:
    host, port = split_address(ray.get_runtime_context().gcs_address)
    assert probe(host, port) is None  # a GCS: gRPC, it answers the HTTP/2 preface
    with socket.socket() as silent, socket.socket() as http:
        for s in (silent, http):
            s.bind(("127.0.0.1", 0))
            s.listen()

        def answer() -> None:  # an HTTP/1.1 server, the dashboard's port say
            conn, _ = http.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        assert probe("127.0.0.1", silent.getsockname()[1], timeout=0.3) == (
            "no answer within 0.3 s"
        )
        assert "does not answer as a Ray head node" in str(probe(*http.getsockname()))
    assert probe("127.0.0.1", free_port()) == "Connection refused"


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "no-pack"])
def test_local_ray_equals_the_local_executor(
    pack: bool,
    local_ray: None,
    reference: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tasks that train hold their CPUs: none is taken for lost, even when 5 s of free CPUs
    # would make it so (a lost task's sweep fails its point: metrics.csv would be missing).
    monkeypatch.setattr(cluster, "LOST_SECONDS", 5.0)
    forks = len(FORKS)
    swept = aaf.sweep(
        SMOKE, grid=GRID, overrides=BASE, runs_dir=tmp_path, executor="ray", pack=pack
    )
    assert swept.status == "completed" and swept.folder is not None
    assert metrics(swept.folder) == reference
    # The packed job's 4 folders were written by 2 processes, none of them a fork of this
    # process, which holds Ray's gRPC threads (a fork server's children).
    assert len(FORKS) == forks
    for p in POINTS:
        point = summary(swept.folder, p)
        env = point["environment"]
        assert isinstance(env, dict) and env["ray_node"] and "default_worker" not in env["argv"]
        packed = point.get("packed")
        # One node of two CPUs: the 4 points are one job of 4 packed points on both CPUs
        # (a small workload: one thread), or 4 jobs of one point, two at a time on one each.
        assert (packed["points"] if isinstance(packed, dict) else 1) == (4 if pack else 1)
        assert env["threads"] == "1" and "small workload" in env["threads_reason"]
        cpus = "2 CPUs" if pack else "1 CPU"
        assert f"a Ray task reserving {cpus}" in env["threads_reason"]


def test_a_tuned_sweep_on_ray_equals_the_local_executor(local_ray: None, tmp_path: Path) -> None:
    """Tuned points (the default): a Ray task trains both phases and sends back the tuning's
    choices and curves with the results; the driver writes the same folders as locally."""
    grid = {"variants.1.n": [1, 5]}
    overrides = ["train.steps=30", "seeds=2", "tune.seeds=2", "dtype=float64"]
    local = aaf.sweep(SMOKE, grid=grid, overrides=overrides, runs_dir=tmp_path / "local")
    ray = aaf.sweep(
        SMOKE, grid=grid, overrides=overrides, runs_dir=tmp_path / "ray", executor="ray"
    )
    assert local.folder is not None and ray.folder is not None
    for p in ("000", "001"):
        for name in ("metrics.csv", "tuning.csv", "tuning_metrics.csv"):
            mine = (ray.folder / "points" / p / name).read_bytes()
            assert mine == (local.folder / "points" / p / name).read_bytes(), (p, name)


def test_killed_worker_resumes_from_its_checkpoint_with_the_same_numbers(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker SIGKILLed in the middle of its job: Ray reruns the task, which goes on from
    the job's last checkpoint (every 0.2 s of training here), not from step 0; the numbers
    equal the local executor's, and the steps trained in all are at most 1.2x the job's."""
    monkeypatch.setattr(cluster, "CHECKPOINT_SECONDS", 0.2)
    grid = {"variants.1.n": [5]}
    local = aaf.sweep(SMOKE, grid=grid, overrides=LONG, runs_dir=tmp_path / "local")
    killer = Killer(saved=True)
    killer.start()
    try:
        swept = aaf.sweep(
            SMOKE, grid=grid, overrides=LONG, runs_dir=tmp_path / "ray", executor="ray"
        )
    finally:
        killer.done.set()
        killer.join()
    assert killer.killed is not None, "no Ray worker was seen training"
    assert not Path(f"/proc/{killer.killed}").exists()
    assert swept.status == "completed" and swept.folder is not None and local.folder is not None
    assert metrics(swept.folder, ("000",)) == metrics(local.folder, ("000",))
    env = summary(swept.folder, "000")["environment"]
    assert isinstance(env, dict), env
    resumed = re.fullmatch(
        r"training 1 from step (\d+) \((\d+) steps trained in this try, a checkpoint every "
        r"(\d+) steps\)",
        str(env.get("resumed")),
    )
    assert resumed is not None, env
    start, trained, every = (int(g) for g in resumed.groups())
    steps = 3000  # LONG's
    assert 0 < start < steps and trained == steps - start
    # The killed try trained fewer than start + every steps (it would have saved again).
    assert (start + every + trained) / steps <= 1.2, (start, trained, every)


def test_a_task_ray_loses_is_submitted_again_and_the_sweep_ends(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task in flight while every CPU of the cluster stays free is one Ray has lost (it
    dropped the task's request for a worker, and the driver would wait forever). Made here by
    tasks that reserve no CPU: each is cancelled and submitted again, ``RETRIES`` times, then
    its point fails with one line, and the sweep ends."""
    monkeypatch.setattr(cluster, "LOST_SECONDS", 1.0)
    monkeypatch.setattr(cluster, "RETRIES", 1)
    monkeypatch.setattr(cluster.RayExecutor, "task_cpus", lambda self, jobs: 0)
    started = time.monotonic()
    swept = aaf.sweep(
        SMOKE, grid={"variants.1.n": [5]}, runs_dir=tmp_path, executor="ray",
        overrides=["train.steps=200000", "seeds=2", "tune=off"],
    )  # fmt: skip
    assert time.monotonic() - started < 60  # 200000 steps would take minutes
    assert swept.folder is not None
    (point,) = swept.points
    assert (point.status, point.error) == (  # lost on its first try and on one more
        "failed",
        "Ray lost its task 2 times (in flight, yet every CPU of the cluster free for 1 s each "
        "time)",
    )
    assert left_behind(re.compile(r"^ray::train_job"), wait_s=10) == {}  # cancelled: ended


def test_a_job_whose_worker_keeps_dying_fails_alone(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "RETRIES", 0)
    runs_dir = tmp_path / "runs"
    killer = Killer()
    killer.start()
    try:
        result = runner.invoke(
            app,
            ["sweep", str(SMOKE), "--grid", "variants.1.n=1,5", *sets(LONG), "--executor",
             "ray", "--no-pack", "--max-parallel", "2", "--runs-dir", str(runs_dir), "-q"],
        )  # fmt: skip
    finally:
        killer.done.set()
        killer.join()
    assert killer.killed is not None
    assert result.exit_code == 1, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    rows = (folder / "points.csv").read_text().splitlines()
    assert re.fullmatch(r"Error: points failed: [01] \(see points\.csv\)", result.stderr.strip()), (
        rows
    )
    assert sum(",completed," in r for r in rows) == 2  # the other point: both variants
    failed = [r for r in rows if ",failed," in r]
    assert len(failed) == 2 and all("the Ray worker running it died (1 try" in r for r in failed)


def test_stop_cancels_running_tasks_and_keeps_finished_points(
    local_ray: None, tmp_path: Path
) -> None:
    finished: list[int] = []

    def on_point(event: PointEvent) -> None:
        if event.phase == "done":
            finished.append(event.index)

    def stop() -> bool:  # Ctrl-C once point 0 is written and point 1 trains
        return bool(finished) and any(c.startswith("ray::train_job") for c in processes().values())

    swept = aaf.sweep(
        SMOKE, grid={"variants.1.n": [1, 2, 5]}, overrides=LONG, runs_dir=tmp_path,
        executor="ray", pack=False, max_parallel=1, stop=stop, on_point=on_point,
    )  # fmt: skip
    assert swept.status == "interrupted" and swept.folder is not None
    assert [p.status for p in swept.points] == ["completed", "pending", "pending"]
    # The cancelled point's folder is gone: it is pending, as if it never started.
    assert sorted(p.name for p in (swept.folder / "points").iterdir()) == ["000"]
    assert left_behind(re.compile(r"^ray::train_job"), wait_s=10) == {}  # its worker ended


def summary_status(folder: Path, point: str) -> str:
    return "completed" if (folder / "points" / point / "summary.json").is_file() else "missing"


def test_resume_after_the_driver_was_killed_reruns_only_the_missing_points(
    local_ray: None, reference: dict[str, bytes], tmp_path: Path
) -> None:
    runs_dir = tmp_path / "runs"
    driver = subprocess.Popen(
        [str(AAF), "sweep", str(SMOKE), *GRID_ARGS, *sets(BASE), "--executor", "ray",
         "--no-pack", "--max-parallel", "1", "--runs-dir", str(runs_dir), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        first: list[Path] = []
        while not first and driver.poll() is None and time.monotonic() < deadline:
            first = list(runs_dir.glob("*/points/*/summary.json"))
            time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        _, err = driver.communicate(timeout=30)
    assert len(first) == 1 and driver.returncode == -signal.SIGKILL, err
    # Its local Ray instance went with it (Ray's fate sharing) but for two agents, which
    # Ray leaves behind for a minute or two after a SIGKILLed driver: ended here.
    agents = frozenset({"ray::DashboardAgent", "ray::RuntimeEnvAgent"})
    left = left_behind(session_of(driver.pid), allowed=agents)
    assert set(left.values()) <= agents, left
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left_behind(session_of(driver.pid), wait_s=5) == {}
    folder = first[0].parents[2]
    done = first[0].parent.name
    kept = {done: (first[0].read_bytes(), first[0].stat().st_mtime_ns)}
    result = runner.invoke(app, ["sweep", "--resume", str(folder), "--executor", "ray", "-q"])
    assert result.exit_code == 0, result.stderr
    again = folder / "points" / done / "summary.json"
    assert (again.read_bytes(), again.stat().st_mtime_ns) == kept[done]
    assert metrics(folder) == reference
    assert [summary_status(folder, p) for p in POINTS] == ["completed"] * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_node(
    args: list[str], temp: Path, env: dict[str, str], wait: bool = True
) -> subprocess.Popen[bytes]:
    """``ray start --block`` (it stops the node's processes when it ends), once it is up
    (``wait`` False: at once; ``started`` waits)."""
    log = temp / "start.log"
    node = subprocess.Popen(
        [str(RAY), "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
         "--temp-dir", str(temp), "--disable-usage-stats", *args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    if wait:
        started(node, temp)
    return node


def started(node: subprocess.Popen[bytes], temp: Path) -> None:
    """Wait until the node ``start_node`` started in ``temp`` is up."""
    log = temp / "start.log"
    deadline = time.monotonic() + 60
    while b"block forever" not in log.read_bytes():
        assert node.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def stop_nodes(nodes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM: each ``ray start --block`` drains its node and stops its processes."""
    for node in nodes:
        node.terminate()
    for node in nodes:
        try:
            node.wait(timeout=45)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


# A node without aaf: this interpreter's install is hidden from its workers (as if it were not
# installed), while a copy elsewhere (the one --ray-ship-code sends) still imports.
HIDE = """
import importlib.machinery, os, sys

HIDDEN = set(os.environ["AAF_TEST_HIDDEN"].split(os.pathsep))


class Hide:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "aaf_cli" and not name.startswith("aaf_cli."):
            return None
        if name == "aaf_cli":
            path = [p for p in sys.path if os.path.abspath(p or ".") not in HIDDEN]
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return spec


sys.meta_path.insert(0, Hide)
"""
# Where the test cluster's GPU tasks run and what they are given (a Ray task, by value).
GPU_PROBE = """
import json, os, sys
import ray
from aaf_cli.sweeps.cluster import task_options

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)


def where():
    return [ray.get_runtime_context().get_node_id(), ray.get_gpu_ids(),
            os.environ.get("CUDA_VISIBLE_DEVICES")]


gpu_node = [n["NodeID"] for n in ray.nodes() if n["Resources"].get("GPU")]
ran = ray.get([ray.remote(where).options(**task_options(1, True)).remote() for _ in range(3)])
print(json.dumps({"gpu_node": gpu_node, "ran": ran}))
"""


def test_every_node_is_checked_first_and_code_can_be_shipped(
    reference: dict[str, bytes], tmp_path: Path
) -> None:
    """Three nodes: the head (with a fake GPU, which torch cannot see), one whose aaf is
    hidden (not installed, as far as its workers know) and one that imports an edited copy.
    Before any folder exists, the sweep is refused in one line naming both bad nodes, and
    ``device: cuda`` naming the head's GPU; ``--ray-ship-code`` sends the driver's code, and
    the sweep (through Ray Client) equals the local executor's. GPU tasks land on the GPU
    node, one GPU each."""
    # Short paths: Ray's sockets live under the temp dir (Unix socket paths are short).
    temps = [Path(tempfile.mkdtemp(prefix=f"aafray{k}_", dir="/tmp")) for k in (0, 1, 2)]
    hide, copy = tmp_path / "hide", tmp_path / "copy"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE)
    package = Path(aaf.__file__).parent
    shutil.copytree(package, copy / "aaf_cli", ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "aaf_cli" / "sweeps" / "spec.py").open("a") as f:
        f.write("# edited on this node\n")
    runs_dir = tmp_path / "runs"
    # Loopback only, for the test: no token (Ray asks for one by default).
    # No draining at the end: the sweep is over.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        client = free_port()
        nodes.append(start_node(["--head", "--port", str(port), "--include-dashboard", "false",
                                 "--num-gpus", "1", "--ray-client-server-port", str(client)],
                                temps[0], env))  # fmt: skip
        hidden = {"PYTHONPATH": str(hide), "AAF_TEST_HIDDEN": str(package.parent)}
        edited = {"PYTHONPATH": str(copy)}
        for temp, extra in zip(temps[1:], (hidden, edited)):  # both join at once
            nodes.append(start_node(["--address", address], temp, {**env, **extra}, wait=False))
        for node, temp in zip(nodes[1:], temps[1:]):
            started(node, temp)

        def sweep(*extra: str, at: str = address) -> subprocess.CompletedProcess[str]:
            # From a folder without aaf_cli: Ray puts the driver's on its workers' path.
            return subprocess.run(
                [str(AAF), "sweep", str(SMOKE), *GRID_ARGS, *sets(BASE), "--executor", "ray",
                 "--ray-address", at, "--runs-dir", str(runs_dir), "-q", *extra],
                capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
            )  # fmt: skip

        node = r"the Ray node \S+ \([\d.]+, [0-9a-f]{12}\)"
        refused = sweep("--set", "device=cpu")
        assert refused.returncode == 2 and not runs_dir.exists(), refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("Error: 2 Ray nodes cannot run this sweep: "), line
        assert re.search(f"{node}: aaf is not installed there: install the driver's aaf there, "
                         "or pass --ray-ship-code", line), line  # fmt: skip
        edited = re.escape(str(copy / "aaf_cli"))
        assert re.search(f"{node}: its aaf at {edited} is not the driver's code "
                         r"\(1 file differs: sweeps/spec\.py\)", line), line  # fmt: skip

        cuda = sweep("--set", "device=cuda", "--ray-ship-code")
        assert cuda.returncode == 2 and not runs_dir.exists(), cuda.stderr
        unseen = "(sees no CUDA device|was built without CUDA)"
        assert re.fullmatch(f"Error: {node}: Ray offers 1 GPU there, but torch {unseen}",
                            cuda.stderr.strip()), cuda.stderr  # fmt: skip

        # Through Ray Client this time: the driver runs on the head, the code goes from here.
        shipped = sweep("--set", "device=cpu", "--ray-ship-code", at=f"ray://127.0.0.1:{client}")
        assert shipped.returncode == 0, shipped.stderr
        folder = Path(shipped.stdout.strip())
        assert metrics(folder) == reference
        ran_on = {summary(folder, p)["environment"]["ray_node"] for p in POINTS}  # type: ignore[index]
        assert len(ran_on) >= 2, ran_on  # the packs were split over the nodes

        probe_gpu = subprocess.run(
            [sys.executable, "-c", GPU_PROBE, address], capture_output=True, text=True,
            env=env, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert probe_gpu.returncode == 0, probe_gpu.stderr
        found = json.loads(probe_gpu.stdout.strip().splitlines()[-1])
        assert [r[0] for r in found["ran"]] == found["gpu_node"] * 3
        assert all(r[1] == [0] and r[2] == "0" for r in found["ran"]), found
    finally:
        stop_nodes(nodes)
        leftover = [left_behind(re.compile(re.escape(str(t))), wait_s=15) for t in temps]
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
    assert leftover == [{}, {}, {}]


def test_ctrl_c_while_connecting_stops_at_once(tmp_path: Path) -> None:
    """Ctrl-C while the driver waits on a head that does not answer: "Interrupted.", exit 130,
    at once (not after the connection's own time-out) and no folder."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts, never answers: the check waits its 5 s
        driver = subprocess.Popen(
            [str(AAF), "sweep", str(SMOKE), "--grid", "variants.1.n=1,5", "--executor", "ray",
             "--ray-address", f"127.0.0.1:{silent.getsockname()[1]}", "--runs-dir",
             str(tmp_path / "runs")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        silent.settimeout(60)
        conn, _ = silent.accept()  # the driver's check of the address waits for an answer
        with conn:
            sent = time.monotonic()
            driver.send_signal(signal.SIGINT)
            _, err = driver.communicate(timeout=30)
    assert time.monotonic() - sent < 2.5, err
    assert driver.returncode == 130 and err.strip() == "Interrupted.", (driver.returncode, err)
    assert not (tmp_path / "runs").exists()


def test_ray_absent_is_one_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None; from aaf_cli.cli import main; "
        f"sys.argv = ['aaf', 'sweep', {str(SMOKE)!r}, '--grid', 'variants.1.n=1,5', "
        f"'--executor', 'ray', '--runs-dir', {str(tmp_path / 'runs')!r}]; main()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == "Error: --executor ray needs Ray: pip install 'aaf[ray]'"
    assert not (tmp_path / "runs").exists()


BAD = {
    "unreachable address": (
        ["--executor", "ray", "--ray-address", "127.0.0.1:1"],
        "Error: --ray-address 127.0.0.1:1: no Ray cluster there: Connection refused",
    ),
    "malformed address": (
        ["--executor", "ray", "--ray-address", "head-node"],
        "Error: --ray-address must be auto, HOST:PORT of a Ray head node or ray://HOST:PORT "
        "of its Ray Client server (got 'head-node')",
    ),
    "unreachable client address": (
        ["--executor", "ray", "--ray-address", "ray://127.0.0.1:1"],
        "Error: --ray-address ray://127.0.0.1:1: no Ray cluster there: Connection refused",
    ),
    "cuda on a cluster without GPUs": (
        ["--executor", "ray", "--set", "device=cuda"],
        "Error: device: cuda, but the Ray cluster has no GPU (its nodes offer CPUs only): use "
        "device: auto or cpu, or add GPU nodes",
    ),
    "ship code without ray": (
        ["--ray-ship-code"],
        "Error: --ray-ship-code needs --executor ray",
    ),
    "address without ray": (
        ["--ray-address", "127.0.0.1:6379"],
        "Error: --ray-address needs --executor ray",
    ),
    "max parallel 0": (
        ["--executor", "ray", "--max-parallel", "0"],
        "Error: --max-parallel must be at least 1 (got 0)",
    ),
    "unknown executor": (["--executor", "dask"], "Error: --executor must be local or ray"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_folder(case: str, tmp_path: Path) -> None:
    extra, message = BAD[case]
    runs_dir = tmp_path / "runs"
    start = time.monotonic()
    result = runner.invoke(
        app, ["sweep", str(SMOKE), "--grid", "variants.1.n=1,5", *extra, "--runs-dir",
              str(runs_dir)],
    )  # fmt: skip
    assert time.monotonic() - start < 30
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not runs_dir.exists()
