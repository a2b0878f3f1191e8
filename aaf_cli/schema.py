"""What every config section shares: the strict base model, the bounds and the naming rules.

The experiment's own sections (``config``) and each problem's (``problems``) are built on it, so
that a problem's config can live beside the problem without importing the experiment's.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

# Upper bounds that keep a typo (steps: 1e9) from starting a run that never ends.
MAX_STEPS = 10_000_000
MAX_POINTS = 1_000_000
MAX_WIDTH = 4096
MAX_SEEDS = 4096
MAX_SEED = 2**31 - 1  # seed values: torch generators take 64-bit seeds; leave room for mixing
MAX_INPUTS = 8


class Strict(BaseModel):
    """A config section: unknown keys refused, frozen once validated, no inf or NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def unknown(kind: str, name: str, valid: Sequence[str]) -> ValueError:
    """``unknown target 'sin'; did you mean 'sine'? (valid: ...)``."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ValueError(f"unknown {kind} '{name}'{hint} (valid: {', '.join(valid)})")
