"""The one check path: everything that can be known about a config before training starts.

``aaf run``, ``aaf validate`` and the Python API all call ``preflight``, so a config that
validates also runs, and a config that ``aaf run`` refuses is refused by ``aaf validate`` with
the same message and exit code. The schema (``config.py``) checks each key; this adds what needs
the target evaluated or the machine looked at: the target finite on its domain, the device
available, and the soft size limits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aaf_cli.budget import Estimate, estimate, over_limits
from aaf_cli.config import ExperimentConfig
from aaf_cli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import torch

    from aaf_cli.targets import Dataset


@dataclass(frozen=True)
class Checked:
    """A config that passed every check, with what the checks made on the way."""

    config: ExperimentConfig
    source: str
    estimate: Estimate
    over_limits: list[str]  # soft limits passed, allowed by force; empty otherwise
    device: torch.device
    data: Dataset


def preflight(cfg: ExperimentConfig, source: str, force: bool = False) -> Checked:
    """Run every check that ``aaf run`` makes before it creates a run folder.

    Args:
        cfg: a config validated by ``load_config``.
        source: where it came from, for messages (a path or ``<built-in default>``).
        force: allow a config over the soft size limits (``aaf run --force``).

    Returns:
        The checked config, its size estimate, the device and the data (made once here and
        used by the run, so nothing is computed twice).

    Raises:
        UsageError: over the soft size limits without ``force``.
        ConfigError: the target is not finite somewhere on its domain, a data file cannot be
            read or split (naming the file and the row or column), or the device asked for is
            not available.
    """
    from aaf_cli.experiment import make_dataset, resolve_device

    with _named(source):
        device = resolve_device(cfg.device)
        est = estimate(cfg, device.type)  # a data file is read here
    over = over_limits(cfg, est)
    if over and not force:
        raise UsageError(
            f"{source}: too large ({'; '.join(over)}): {est.describe()}; run it anyway with --force"
        )
    with _named(source):
        data = make_dataset(cfg, device)
    return Checked(cfg, source, est, over, device, data)


@contextlib.contextmanager
def _named(source: str) -> Iterator[None]:
    """A ``ConfigError`` raised inside names ``source`` as the file it is about."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(source, exc.key, exc.message) from None
