#!/usr/bin/env python
"""Write ``configs/data/oscillator.csv``: the example measurements of ``configs/measured.yaml``.

A damped oscillator released from x = 1 at rest, x(t) = exp(-zeta w t) (cos(w_d t) +
zeta w / w_d sin(w_d t)) with w = 2 pi and w_d = w sqrt(1 - zeta^2), "measured" at 600 random
(time, damping ratio) pairs, t in [0, 3] s and zeta in [0.05, 0.5], with Gaussian noise of
standard deviation 0.01 on x, as a sensor would give it. Synthetic (the formula above is the
truth), so that the example is reproducible and its file small; it stands for any table of
measurements with two inputs and one output. Deterministic (seed 0)::

    python scripts/make_example_data.py
"""

from __future__ import annotations

import math
import random
from pathlib import Path

ROWS = 600
NOISE = 0.01
OUT = Path(__file__).resolve().parents[1] / "configs" / "data" / "oscillator.csv"


def displacement(t: float, zeta: float) -> float:
    w = 2 * math.pi
    wd = w * math.sqrt(1 - zeta**2)
    return math.exp(-zeta * w * t) * (math.cos(wd * t) + zeta * w / wd * math.sin(wd * t))


def main() -> None:
    rng = random.Random(0)
    lines = ["t,zeta,x,sensor"]
    for k in range(ROWS):
        t, zeta = rng.uniform(0.0, 3.0), rng.uniform(0.05, 0.5)
        x = displacement(t, zeta) + rng.gauss(0.0, NOISE)
        lines.append(f"{t:.6f},{zeta:.6f},{x:.6f},S{k % 3 + 1}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"{OUT}: {ROWS} rows")


if __name__ == "__main__":
    main()
