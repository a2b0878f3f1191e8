"""What a Ray node would run: checked on every node before a sweep starts.

``report`` runs as one small Ray task per node (``cluster.preflight``) and says where ``aaf``
imports from there, a digest of each of its source files, where the node's own install is,
torch's version, the dependencies it lacks and, asked for, its CUDA devices. ``problems``
compares a report with the driver's ``Local`` facts: a node whose ``aaf`` is missing, shadowed
or not the driver's code is named in one line before the sweep folder exists.

The code is compared, not the version string: ``digests`` hashes every file of the package, so
a node on another commit (or with one file edited) differs. Ray puts the driver's working
directory first on its workers' import path, so a worker can import a checkout it finds there
instead of the node's install; the report tells the two apart (``imported`` and ``installed``).

This module imports nothing of ``aaf`` and only the standard library at the top: its functions
are sent to the nodes by value (``cloudpickle``'s ``register_pickle_by_value``), so the check
runs where ``aaf`` is missing or broken.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The modules ``aaf`` needs on a node besides itself (those its base install brings).
DEPENDENCIES = ("torch", "numpy", "pydantic", "yaml", "matplotlib", "typer", "rich")
#: The node's own install is looked up by a fresh interpreter: at most this long.
INSTALL_SECONDS = 60.0


def digests(package: Path) -> dict[str, str]:
    """Each file of the package at ``package`` (its folder), by path relative to it: the
    first 16 hex digits of its SHA-256. Compiled files and caches are left out."""
    out: dict[str, str] = {}
    for path in sorted(package.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        out[path.relative_to(package).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()[
            :16
        ]
    return out


def digest(files: dict[str, str]) -> str:
    """One digest of a package's file digests (``digests``): 16 hex digits."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _public(version: str | None) -> str | None:
    """A version without its local part: ``2.13.0+cu124`` and ``2.13.0+cpu`` are both 2.13.0
    (the same release, built for other devices)."""
    return None if version is None else version.split("+", 1)[0]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(package: str) -> str | None:
    """Where a fresh interpreter of this node, started in an empty folder, imports
    ``package`` from (its ``__init__.py``): the node's own install, whatever a Ray worker's
    import path adds. None: not installed; a string starting with ``?`` when the lookup
    failed."""
    code = "\n".join(
        [
            "import importlib.util as u, sys",
            "try:\n    s = u.find_spec(sys.argv[1])",
            "except ModuleNotFoundError:\n    s = None",
            "print(s.origin if s is not None and s.origin else '')",
        ]
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    try:
        with tempfile.TemporaryDirectory() as empty:
            out = subprocess.run(
                [sys.executable, "-c", code, package],
                cwd=empty, env=env, capture_output=True, text=True, timeout=INSTALL_SECONDS,
            )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? {type(exc).__name__}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [""])[-1]
        return f"? {last[:200]}"
    return out.stdout.strip() or None


def _devices() -> dict[str, Any]:
    """The CUDA devices a task on this node sees (Ray sets ``CUDA_VISIBLE_DEVICES`` to the
    GPUs it gave the task): their count, names and memory, or why there are none."""
    try:
        import torch
    except Exception as exc:  # a broken torch is the node's problem, said as such
        return {"cuda": 0, "why": f"torch does not import ({type(exc).__name__}: {exc})"}
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = "torch sees no CUDA device" if built else "torch was built without CUDA"
        return {"cuda": 0, "why": why}
    count = torch.cuda.device_count()
    props = [torch.cuda.get_device_properties(i) for i in range(count)]
    return {
        "cuda": count,
        "names": [p.name for p in props],
        "memory": [int(p.total_memory) for p in props],
    }


def report(
    package: str = "aaf_cli", devices: bool = False, driver_dirs: tuple[str, ...] = ()
) -> dict[str, Any]:
    """What this node would run (the body of the check task; only the standard library, and
    torch when ``devices``): host, where ``package`` imports from in this worker and where the
    node's own install is, its file digests, torch's version, missing dependencies, devices.
    ``driver_dirs``: the folders Ray adds to its workers' import path from the driver (its
    working directory): ``from_driver`` says whether the import came from one of them."""
    out: dict[str, Any] = {"host": socket.gethostname(), "python": sys.version.split()[0]}
    try:
        import ray

        if ray.is_initialized():  # in a Ray worker (not called directly)
            out["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # no Ray here: the report is still whole without it
        pass
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:  # an import hook that hides it: not there
        spec = None
    except Exception as exc:  # a broken install raises here rather than returning None
        spec, out["import_error"] = None, f"{type(exc).__name__}: {exc}"
    origin = spec.origin if spec is not None else None
    out["imported"] = origin
    out["from_driver"] = False
    out["installed"] = _installed(package)
    if origin:
        out["from_driver"] = str(Path(origin).parent.parent) in driver_dirs
        out["digests"] = digests(Path(origin).parent)
    out["torch"] = _version("torch")
    out["missing"] = [m for m in DEPENDENCIES if _found(m) is False]
    if devices:
        out["devices"] = _devices()
    return out


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except Exception:
        return False


@dataclass(frozen=True)
class Local:
    """The driver's side of the comparison: its package's file digests and torch."""

    digests: dict[str, str]
    torch: str | None
    shipped: bool = False  # the driver's package is sent to the nodes (``--ray-ship-code``)

    @classmethod
    def here(cls, shipped: bool = False) -> Local:
        import aaf_cli

        return cls(digests(Path(aaf_cli.__file__).parent), _version("torch"), shipped)


def name_of(node: dict[str, Any]) -> str:
    """How a node is named in a message: host, IP and the start of its Ray node id."""
    host = str(node.get("host") or node.get("NodeManagerHostname") or "?")
    ip = node.get("NodeManagerAddress")
    nid = str(node.get("node_id") or node.get("NodeID") or "")[:12]
    where = ", ".join(p for p in (str(ip) if ip else "", nid) if p)
    return f"{host} ({where})" if where else host


def problems(node: dict[str, Any], local: Local) -> list[str]:
    """What keeps a node from running the driver's sweep, each as a clause of one line
    (empty: the node is fine)."""
    imported, installed = node.get("imported"), node.get("installed")
    fix = "install the driver's aaf there, or pass --ray-ship-code"
    if not imported:
        error = node.get("import_error")
        why = f"aaf does not import there ({error})" if error else "aaf is not installed there"
        return [f"{why}: {fix}"]
    out: list[str] = []
    missing = node.get("missing") or []
    if missing:
        out.append(f"it lacks {', '.join(missing)} (aaf's dependencies): pip install them there")
    if not local.shipped and installed != imported:
        own = "no install of its own" if not installed else f"its own install at {installed}"
        if str(installed or "").startswith("?"):
            own = f"its own install could not be looked up ({str(installed)[2:]})"
        if node.get("from_driver"):
            out.append(
                f"its workers would import aaf from {Path(imported).parent} (in the driver's "
                f"working directory, which Ray puts first on its workers' import path), not "
                f"{own}: start aaf sweep from another directory"
            )
        else:
            out.append(f"its workers would import aaf from {Path(imported).parent}, not {own}")
    theirs = node.get("digests") or {}
    if theirs != local.digests:
        changed = sorted(
            k for k in set(theirs) | set(local.digests) if theirs.get(k) != local.digests.get(k)
        )
        shown = ", ".join(changed[:3])
        if len(changed) > 3:
            shown += f" (+{len(changed) - 3} more)"
        out.append(
            f"its aaf at {Path(imported).parent} is not the driver's code ({len(changed)} "
            f"file{'s differ' if len(changed) > 1 else ' differs'}: {shown}): {fix}"
        )
    if _public(node.get("torch")) != _public(local.torch):
        out.append(
            f"it has torch {node.get('torch') or '(none)'}, the driver torch {local.torch}: the "
            "same torch release on every node keeps results comparable"
        )
    return out
