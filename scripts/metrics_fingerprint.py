#!/usr/bin/env python
"""Fingerprints of the shipped configs' results: has a refactor changed what ``aaf`` computes?

Runs every config under ``configs/`` (and the built-in default) cut short, eagerly
(``train.compile=false``) on one thread, and prints one line per config: the SHA-256 of its
``metrics.csv`` and of ``summary.json``'s results. Run it before and after a change that should
not change any number, on the same machine, and ``diff`` the two outputs::

    python scripts/metrics_fingerprint.py > before.txt
    # ... refactor ...
    python scripts/metrics_fingerprint.py > after.txt && diff before.txt after.txt

Each config keeps its own tuning setting (a tuned config tunes, on its own tuning seeds, for
the same steps), so the rate choice is fingerprinted too; ``--steps`` and ``--seeds`` set how
short (each phase of a phased config keeps its share of the steps).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def shortened(path: Path | None, steps: int) -> list[str]:
    """``--set`` overrides that cut a config to about ``steps`` steps (phase by phase)."""
    train = ((yaml.safe_load(path.read_text()) or {}) if path else {}).get("train") or {}
    phases = train.get("phases") or []
    if not phases:
        return [f"train.steps={steps}"]
    total = sum(p["steps"] for p in phases)
    return [
        f"train.phases.{k}.steps={max(1, round(steps * p['steps'] / total))}"
        for k, p in enumerate(phases)
    ]


def numbers(summary: dict) -> bytes:
    """What a run computed: its variants' results, comparisons, tuning and splits (no clock)."""
    chosen = {k: summary.get(k) for k in ("variants", "comparisons", "tuning", "splits")}
    if isinstance(chosen["tuning"], dict):
        chosen["tuning"] = {k: v for k, v in chosen["tuning"].items() if not k.endswith("_s")}
    return json.dumps(chosen, sort_keys=True, default=str).encode()


def fingerprint(path: Path | None, steps: int, seeds: int, aaf: str) -> str:
    with tempfile.TemporaryDirectory() as runs:
        overrides = [*shortened(path, steps), f"seeds={seeds}"]
        overrides += ["train.compile=false", "threads=1"]
        command = [aaf, "run", *([str(path)] if path else []), "-q", "--runs-dir", runs]
        for item in overrides:
            command += ["--set", item]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            return f"failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}"
        (folder,) = [p for p in Path(runs).iterdir() if p.is_dir()]
        metrics = hashlib.sha256((folder / "metrics.csv").read_bytes()).hexdigest()[:16]
        summary = json.loads((folder / "summary.json").read_text())
        results = hashlib.sha256(numbers(summary)).hexdigest()[:16]
        return f"metrics {metrics} results {results}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--aaf", default=str(Path(sys.executable).with_name("aaf")))
    parser.add_argument("configs", nargs="*", type=Path)
    args = parser.parse_args()
    configs: list[Path | None] = list(args.configs) or [
        None,
        *sorted((ROOT / "configs").rglob("*.yaml")),
    ]
    for path in configs:
        began = time.perf_counter()
        line = fingerprint(path, args.steps, args.seeds, args.aaf)
        name = "(default)" if path is None else str(path.resolve().relative_to(ROOT))
        print(f"{name:40s} {line}", flush=True)
        print(f"  {name}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
