"""Training that resumes from a checkpoint: a rerun of a job goes on where the last one saved.

A job (one ``sweeps.packing.train_pack`` call, say a Ray task) makes one ``Checkpoints`` over a
``Store``; each ``train`` call of the job takes the next ``Stage`` from it (``Checkpoints.stage``),
and saves its training state into the store now and then, and once more when it finishes. A
rerun of the same job (same arguments, a fresh ``Checkpoints`` on the same store) makes the same
``train`` calls in the same order, since everything in them is seeded: each stage finds its last
blob, and training goes on from there. The result equals that of an uninterrupted run, number
for number (wall-clock times aside); a stage that had finished is not trained again.

What a blob holds, and where ``train`` can save, is ``train.train``'s business (see its
``checkpoint`` argument); this module keeps the store, the keys and the cadence.

Blobs are pickles (``torch.save``): loading one runs whatever code it names, so ``loads`` (used
with ``weights_only=False``) must only read blobs from a store this program wrote itself, never
one from elsewhere.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch

#: The layout of a blob (``dumps``); a blob of another layout is refused.
FORMAT = 1


class Store(Protocol):
    """Where checkpoints live, by key: ``get`` the last blob put under a key (None: none yet),
    ``put`` one, replacing it. A Ray actor, a dict (``MemoryStore``), a folder."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, blob: bytes) -> None: ...


class MemoryStore:
    """A ``Store`` in a dict (``blobs``), for tests and for use within one process."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.blobs.get(key)

    def put(self, key: str, blob: bytes) -> None:
        self.blobs[key] = blob


def dumps(value: Any) -> bytes:
    """``value`` as bytes (``torch.save``: tensors, dataclasses, plain Python values)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def loads(blob: bytes) -> Any:
    """What ``dumps`` made, with every tensor on the CPU. Unpickles with ``weights_only=False``
    (a blob holds ``LogRecord`` s and a ``TrainResult``): only for blobs of our own store."""
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)


class Stage:
    """The checkpoints of one ``train`` call, under ``key`` in ``store``.

    ``train`` opens the stage (``open``: the state saved last, or None), asks at every step
    boundary whether a save is due (``at``), saves (``save``) and, when it finishes, saves its
    result (``finish``). A save is due at step s when ``every_seconds`` have passed since the
    stage started or last saved, or when s is ``every_steps`` steps past the last save.
    ``every_steps`` is fixed by the first save of the stage (the steps trained until then,
    unless the ``Checkpoints`` fixed it), and stored: a resumed attempt keeps the cadence. So an
    attempt stopped after a save at step c had trained fewer than c + ``every_steps`` steps
    (where ``train`` may save: not inside an L-BFGS phase).

    For the caller, once ``train`` has run: ``resumed_from``, the step this attempt started
    from (None: from the start), ``every_steps`` (None: no save yet fixed it) and
    ``steps_trained``, the steps this attempt trained (0 for a stage restored finished).
    """

    def __init__(
        self,
        store: Store,
        key: str,
        every_seconds: float,
        every_steps: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.key, self.clock = store, key, clock
        self.every_seconds = every_seconds
        self.every_steps = every_steps
        self.resumed_from: int | None = None
        self.steps_trained = 0
        self._first = 0  # the step this attempt started from
        self._last = 0  # the step of the last save (or the start)
        self._since = 0.0  # the clock then (``open`` starts it)

    def open(self) -> dict[str, Any] | None:
        """The blob saved last for this stage, or None (start from step 0); starts the clock.

        Returns:
            ``{"step": s, "done": finished?, "state": what train saved}``.

        Raises:
            ValueError: the blob is not one of this stage's (another layout or key).
        """
        raw = self.store.get(self.key)
        blob = None if raw is None else loads(raw)
        if blob is not None:
            if blob.get("format") != FORMAT or blob.get("key") != self.key:
                raise ValueError(f"the checkpoint under {self.key!r} is not one of this stage's")
            self.resumed_from = self._first = self._last = int(blob["step"])
            if blob["every_steps"] is not None:
                self.every_steps = int(blob["every_steps"])
        self._since = self.clock()
        return blob

    def at(self, step: int) -> bool:
        """Training is at ``step`` (that many updates done): whether a save is due."""
        self.steps_trained = step - self._first
        if step <= self._last:
            return False
        if self.every_steps is not None and step - self._last >= self.every_steps:
            return True
        return self.clock() - self._since >= self.every_seconds

    def save(self, step: int, state: dict[str, Any], done: bool = False) -> None:
        """Put ``state``, the training state at ``step`` (``done``: the finished stage's), as
        this stage's blob; the first save fixes ``every_steps``."""
        if self.every_steps is None and not done:
            self.every_steps = max(step - self._first, 1)
        blob = {
            "format": FORMAT,
            "key": self.key,
            "step": step,
            "done": done,
            "every_steps": self.every_steps,
            "state": state,
        }
        self.store.put(self.key, dumps(blob))
        self._last, self._since = step, self.clock()

    def finish(self, step: int, state: dict[str, Any]) -> None:
        """The stage finished at ``step``: its final blob (a rerun restores it, untrained)."""
        self.steps_trained = step - self._first
        self.save(step, state, done=True)

    def entries(self) -> dict[str, float | str]:
        """What ``TrainResult.extra`` says of this stage: ``resumed_from_step`` (-1: from the
        start), ``checkpoint_every_steps`` (-1: never fixed) and ``steps_trained``."""
        return {
            "resumed_from_step": -1 if self.resumed_from is None else self.resumed_from,
            "checkpoint_every_steps": -1 if self.every_steps is None else self.every_steps,
            "steps_trained": self.steps_trained,
        }


class Checkpoints:
    """The checkpoints of one job: its ``train`` calls' stages, in order, under the keys
    ``f"{job}/{n}"`` for the n-th call (``stage``). A rerun of the job makes a fresh
    ``Checkpoints`` on the same store and job.

    Args:
        store: where the blobs go.
        every_seconds: the time between saves of a stage (0: at every step boundary where
            ``train`` may save).
        job: the job's name, the prefix of its keys (one store may serve several jobs).
        every_steps: the steps between saves from the start (default: fixed by each stage's
            first save, see ``Stage``).
        clock: the time in seconds (a test's own clock).
    """

    def __init__(
        self,
        store: Store,
        every_seconds: float,
        job: str = "",
        *,
        every_steps: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_seconds < 0:
            raise ValueError("every_seconds must be at least 0")
        if every_steps is not None and every_steps < 1:
            raise ValueError("every_steps must be at least 1")
        self.store, self.every_seconds, self.job = store, every_seconds, job
        self.every_steps, self.clock = every_steps, clock
        #: The stages handed out so far, in order.
        self.stages: list[Stage] = []

    def stage(self) -> Stage:
        """The next ``train`` call's stage."""
        stage = Stage(
            self.store,
            f"{self.job}/{len(self.stages)}",
            self.every_seconds,
            self.every_steps,
            self.clock,
        )
        self.stages.append(stage)
        return stage
