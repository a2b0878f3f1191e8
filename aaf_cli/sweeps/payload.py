"""What a Ray task sends back: its points' results, as bytes that hold what their folders read.

A packed job's results (``packing.train_pack``, one per point) are made for the driver to write
each point's run folder (``pipeline.write_run``). Pickled as they are, they carry much that no
folder reads, in a costly form: every logged record holds a few tensors of M numbers (a pickled
tensor costs hundreds of bytes, however small); every point refers to the whole packed ensemble,
whose parameters are views of one flat tensor (pickled once per parameter: 13 times for two
groups of three layers); the data carries its validation points (and a PDE's compiled problem);
the predictions are every model's, in float64. ``encode`` keeps what the writer reads, and sends
it thus:

* each point's config, environment, packing, controls, tuning choices and the result's small
  facts (times, steps done, ``extra``) as they are; its members only where they are not its
  config's own (``experiment.members``);
* its log records as one array per quantity (train, test and validation loss, S(a), each logged
  parameter, function evaluations), a row per model, with the steps and times once;
* each model's checkpoint (``state_dict_of``: its tensors' storages with their layout, so that
  ``torch.save`` writes the same bytes), with the facts the summary reads of its group (widths,
  base activation, parameters per model), once per model of the trained ensemble however many
  points share it (a sweep's fixed baseline), and nothing else of the ensemble;
* of the predictions on the test points, the rows that the figures and ``fit.csv`` read: each
  variant's median seed (``Drawing.median_predictions``, the writer's own rule); the others come
  back NaN;
* of the data, the training and test points (the fit figure draws them, the summary counts
  them); of per-seed training data (``target.resample``), the rows of those models and the
  first (the figure draws one of them), the others NaN; no validation points and no compiled
  PDE problem (the writer reads neither);
* the tuning phase's curves (``tuning_metrics.csv``, ``tuning.png``) as an array per list.

Every float64 array whose values are all float32 numbers (a float32 run's, copied to float64 on
the host) travels as float32, and int64 as int32 where it fits; both come back bit for bit. An
array's bytes equal to another's (a model several points share, the steps of every curve, an
all-NaN column) are sent once. The whole is pickled and compressed with zlib. ``decode`` rebuilds
the results; the folders written from them have the same bytes as those written from the
trained results (``tests/test_payload.py``), but for ``summary.json``'s readings of the clock.

Size: beyond a few kilobytes per point, a payload grows with the models times the logged
records (the curves, the tuning phase's too), the models times their parameters (the
checkpoints), the variants times the test points (the median seeds' predictions) and the
training and test points: not with the steps between logged ones, the ensemble's other state or
the validation data. One over ``MAX_BYTES`` is not sent: ``encode`` raises a ``PayloadError``
whose one line names the job. Measured: ``configs/smoke.yaml`` as 4 points packed at 300 steps,
0.74 MB pickled, 42 kB encoded; the 20-point grid of ``benchmarks/bench_sweep.py`` at 200 steps,
5.7 MB pickled, 0.37 MB encoded (half of it the checkpoints).

The decoded results are for writing folders, not for training: their ``ensemble`` is a
``SentModels`` (checkpoints and group facts), and their data holds no validation points.
"""

from __future__ import annotations

import dataclasses
import pickle
import zlib
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from aaf_cli.errors import AafError

if TYPE_CHECKING:
    from aaf_cli.experiment import ExperimentResult
    from aaf_cli.results import Series
    from aaf_cli.train import LogRecord

#: A payload's first bytes, then the version of its format (one byte).
MAGIC = b"AAFP"
FORMAT = 1
#: Largest payload ``encode`` returns, in bytes. Ray's object store would take more, but a job
#: this large logs far more often than its folders need.
MAX_BYTES = 512 * 2**20
#: zlib's level: its fastest. These payloads are mostly the bytes of floats: level 6 packed
#: them 1.5% smaller in 1.3 to 2.5 times the time (20 against 25 to 50 ms per MB, measured on a
#: busy machine), lzma 6% smaller in 6 to 15 times it.
LEVEL = 1

#: The data the writer reads (``targets.Dataset``'s first fields).
_DATA = ("x_train", "y_train", "x_test", "y_test")
#: A log record's per-model tensors (``train.LogRecord``; the last two may be None).
_QUANTITIES = ("train_loss", "test_loss", "recovery", "val_loss", "evals")
#: ``train.LogRecord``'s fields: records with others are sent as they are.
_RECORD_FIELDS = {"step", "elapsed", "params", *_QUANTITIES}
#: ``results.Series``' lists, and the Python type of their items.
_SERIES_LISTS = {
    "steps": int,
    "time": float,
    "train": float,
    "test": float,
    "recovery": float,
    "val": float,
    "evals": int,
}

#: ``results.Series``' fields: series with others are sent as they are.
_SERIES_FIELDS = {"variant", "seed", "diverged_at", "params", "terms", *_SERIES_LISTS}

T = TypeVar("T", bound=Hashable)


def _names(cls: Any) -> list[str]:
    """A dataclass's field names, in order."""
    return [f.name for f in dataclasses.fields(cls)]


class PayloadError(AafError):
    """A job's results too large to send back (``MAX_BYTES``), or bytes that are no payload of
    this format."""


def _narrow(a: np.ndarray) -> np.ndarray:
    """``a`` in the narrowest type that holds its values exactly: float32 for float64 values
    that are all float32 numbers (NaN and infinities too), int32 for int64 values that fit."""
    if a.dtype == np.float64:
        b = a.astype(np.float32)
        if np.array_equal(b.astype(np.float64).view(np.int64), a.view(np.int64)):
            return b
    elif a.dtype == np.int64 and a.size:
        info = np.iinfo(np.int32)
        if info.min <= int(a.min()) and int(a.max()) <= info.max:
            return a.astype(np.int32)
    return a


def _torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."))
    assert isinstance(dtype, torch.dtype)
    return dtype


# ------------------------------------------------------------------------------------------
# Encoding


class _Encoder:
    """Builds the document that ``encode`` pickles. Equal strings, layouts and array bytes are
    made one object (``same``), which pickle then writes once; models and their groups are
    numbered by their place in the trained ensemble (each checkpoint taken once)."""

    def __init__(self) -> None:
        self.objects: dict[Any, Any] = {}
        self.groups: dict[int, int] = {}  # id(group) -> its index
        self.group_facts: list[tuple[list[int], str, str | None, int]] = []
        self.models: dict[tuple[int, int], int] = {}  # (id(group), position) -> its index
        self.model_list: list[tuple[int, int, list[tuple[int, Any, bytes]]]] = []
        self.keys: dict[int, int] = {}  # id(a checkpoint key) -> its index
        self.key_list: list[str] = []
        self.alive: list[Any] = []  # what the ids above name, kept until the end

    def same(self, value: T) -> T:
        """The first object equal to ``value`` this encoder met (``value`` if none)."""
        found: T = self.objects.setdefault((type(value), value), value)
        return found

    def array(self, t: torch.Tensor) -> tuple[Any, bytes]:
        """A tensor's values: ((torch dtype, numpy dtype, shape), bytes), narrowed (``_narrow``)."""
        values = _narrow(t.detach().cpu().contiguous().numpy())
        head = self.same((str(t.dtype), values.dtype.str, tuple(t.shape)))
        return head, self.same(values.tobytes())

    def rows(self, t: torch.Tensor, kept: Sequence[int] | None = None) -> tuple[Any, ...]:
        """A tensor with a leading model axis as one byte string per row (a row equal to one
        already sent costs a reference): ((torch dtype, numpy dtype, shape), rows kept (None:
        all), their bytes). The rows not kept come back NaN."""
        host = t.detach().cpu()
        if kept is not None:
            host = host[torch.tensor(list(kept), dtype=torch.long)]
        values = _narrow(host.contiguous().numpy())
        head = self.same((str(t.dtype), values.dtype.str, tuple(t.shape)))
        data = [self.same(row.tobytes()) for row in values]
        return head, None if kept is None else list(kept), data

    def model(self, group: Any, j: int) -> int:
        """The index of model ``j`` of ``group`` (its checkpoint and group facts sent once)."""
        if id(group) not in self.groups:
            self.alive.append(group)
            self.groups[id(group)] = len(self.group_facts)
            facts = (list(group.layers), group.base, group.family.base, group.parameter_count())
            self.group_facts.append(facts)
        key = (id(group), j)
        if key not in self.models:
            self.models[key] = len(self.model_list)
            state = [self.tensor_exact(k, v) for k, v in group.state_dict_of(j).items()]
            self.model_list.append((self.groups[id(group)], j, state))
        return self.models[key]

    def tensor_exact(self, key: str, t: torch.Tensor) -> tuple[int, Any, bytes]:
        """A checkpoint's entry as (its key's index, its layout, its storage's bytes): rebuilt
        alike, ``torch.save`` writes the same bytes. (Keys are numbered by identity: pickle
        writes an object met twice as a reference, so equal keys that were distinct objects
        must come back distinct.)"""
        if id(key) not in self.keys:
            self.alive.append(key)
            self.keys[id(key)] = len(self.key_list)
            self.key_list.append(key)
        t = t.detach().cpu()
        storage = t.untyped_storage()
        layout = self.same((str(t.dtype), tuple(t.shape), t.stride(), t.storage_offset()))
        raw = torch.empty(0, dtype=torch.uint8).set_(storage).numpy().tobytes()
        return self.keys[id(key)], layout, self.same(raw)


def _records(records: Sequence[LogRecord], enc: _Encoder) -> dict[str, Any]:
    """Log records as one ``rows`` per quantity, ``[models, records]``; records that differ in
    their quantities (not the engine's) each as they are, on the CPU."""

    def alike(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
        if a is None or b is None:
            return a is b
        return a.dtype == b.dtype and a.shape == b.shape and a.dim() == 1

    from aaf_cli.train import LogRecord

    first = records[0] if records else None
    if (
        first is None
        or set(_names(LogRecord)) != _RECORD_FIELDS
        or not all(
            list(r.params) == list(first.params)
            and all(alike(getattr(r, q), getattr(first, q)) for q in _QUANTITIES)
            and all(alike(v, first.params[k]) for k, v in r.params.items())
            for r in records
        )
    ):
        return {"records": [_on_host(r) for r in records]}

    def column(values: Sequence[torch.Tensor]) -> tuple[Any, ...]:
        return enc.rows(torch.stack(list(values), dim=1))

    return {
        "steps": enc.array(torch.tensor([r.step for r in records], dtype=torch.long)),
        "elapsed": enc.array(torch.tensor([r.elapsed for r in records], dtype=torch.float64)),
        "quantities": [
            (q, column([getattr(r, q) for r in records]))
            for q in _QUANTITIES
            if getattr(first, q) is not None
        ],
        "params": [(enc.same(k), column([r.params[k] for r in records])) for k in first.params],
    }


def _on_host(r: LogRecord) -> LogRecord:
    def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().cpu()

    return dataclasses.replace(
        r,
        train_loss=r.train_loss.detach().cpu(),
        test_loss=r.test_loss.detach().cpu(),
        recovery=r.recovery.detach().cpu(),
        params={k: v.detach().cpu() for k, v in r.params.items()},
        val_loss=cpu(r.val_loss),
        evals=cpu(r.evals),
    )


def _series(series: Sequence[Series], enc: _Encoder) -> list[tuple[Any, ...]] | list[Series]:
    """Per-model histories: each list as (numpy dtype, bytes), narrowed alike for all the
    series, where the items of all are of the list's type (as the engine's are); else as
    they are. (Series of a shape this module does not know go as they are.)"""
    from aaf_cli.results import Series

    if set(_names(Series)) != _SERIES_FIELDS:
        return list(series)

    def packed(lists: list[list[Any]], kind: type) -> list[Any]:
        flat = [x for values in lists for x in values]
        if set(map(type, flat)) - {kind}:
            return [list(values) for values in lists]
        array = _narrow(np.array(flat, dtype=np.float64 if kind is float else np.int64))
        data, width, start = array.tobytes(), array.itemsize, 0
        stored = enc.same(array.dtype.str)
        out = []
        for values in lists:
            end = start + len(values) * width
            out.append((stored, enc.same(data[start:end])))
            start = end
        return out

    lists = [packed([getattr(s, n) for s in series], kind) for n, kind in _SERIES_LISTS.items()]
    dicts = []
    for name in ("params", "terms"):
        keyed = [(s, k) for s in series for k in getattr(s, name)]
        values = iter(packed([getattr(s, name)[k] for s, k in keyed], float))
        dicts.append([[(enc.same(k), next(values)) for k in getattr(s, name)] for s in series])
    return [
        (s.variant, s.seed, s.diverged_at, [column[i] for column in lists], params, terms)
        for i, (s, params, terms) in enumerate(zip(series, *dicts))
    ]


def _kept_rows(exp: ExperimentResult) -> list[int]:
    """The models whose predictions the figures and ``fit.csv`` read, in ascending order: each
    variant's median seed, by the writer's own rule (``Drawing.median_predictions``)."""
    from aaf_cli.experiment import tidy
    from aaf_cli.problems.base import Drawing

    series, outcomes = tidy(exp)
    drawing = Drawing(exp, series, outcomes, {}, "", (), {})
    index = {(m.variant, m.seed): i for i, m in enumerate(exp.members)}
    return sorted({index[(v, seed)] for v, (seed, _) in drawing.median_predictions().items()})


def _point(exp: ExperimentResult, enc: _Encoder) -> dict[str, Any]:
    """One point's result as the document holds it (``_point_back`` reads it): every field of
    the result and of its ``TrainResult``, those that this module compacts compacted, the
    others as they are."""
    from aaf_cli.experiment import members

    res = exp.result
    kept = _kept_rows(exp)
    data: dict[str, Any] = {}
    for name in _DATA:
        t: torch.Tensor = getattr(exp.data, name)
        if name in ("x_train", "y_train") and t.dim() == 3:  # per seed: the drawn models' rows
            data[name] = enc.rows(t, sorted({0, *kept}))
        else:
            data[name] = enc.array(t)
    result = {name: getattr(res, name) for name in _names(res)}
    result.update(
        records=_records(res.records, enc),
        steps_to_threshold=enc.array(res.steps_to_threshold),
        diverged_at=enc.array(res.diverged_at),
        predictions=enc.rows(res.predictions, kept),
    )
    point = {name: getattr(exp, name) for name in _names(exp)}
    point.update(
        members=None if exp.members == members(exp.config) else exp.members,
        data=data,
        result=result,
        ensemble=[enc.model(*exp.ensemble.locate(i)) for i in range(len(exp.members))],
    )
    if exp.tuning is not None:
        point["tuning"] = (
            dataclasses.replace(exp.tuning, series=[]),
            _series(exp.tuning.series, enc),
        )
    return point


def job_name(results: Sequence[ExperimentResult]) -> str:
    """The job in words: its points' labels (a pack's ``with``), else their names."""
    packing = results[0].packing if results else None
    labels = [str(x) for x in packing["with"]] if packing else [r.config.name for r in results]
    shown = ", ".join(labels[:3]) + (f" (+{len(labels) - 3} more)" if len(labels) > 3 else "")
    return f"the job of point{'s' if len(labels) != 1 else ''} {shown}"


def encode(results: Sequence[ExperimentResult]) -> bytes:
    """A job's results (``packing.train_pack``'s, one per point) as bytes for ``decode``: what
    their run folders read, compacted (see the module's docstring).

    Raises:
        PayloadError: the bytes would be more than ``MAX_BYTES``.
    """
    enc = _Encoder()
    document = {
        "points": [_point(exp, enc) for exp in results],
        "groups": enc.group_facts,
        "models": enc.model_list,
        "keys": enc.key_list,
    }
    blob = MAGIC + bytes([FORMAT]) + zlib.compress(pickle.dumps(document, protocol=5), LEVEL)
    if len(blob) > MAX_BYTES:
        raise PayloadError(
            f"{job_name(results)}: its results come to {len(blob) / 2**20:.1f} MiB, more than "
            f"the {MAX_BYTES / 2**20:.1f} MiB a Ray task sends back: log less often (a larger "
            "train.log_every), or train fewer models per job (--no-pack)"
        )
    return blob


# ------------------------------------------------------------------------------------------
# Decoding


class _Family:
    """The one fact the summary reads of a group's activation family: its base."""

    def __init__(self, base: str | None) -> None:
        self.base = base


class SentGroup:
    """What the folder writer reads of one batched group (``models.Ensemble``,
    ``kan.KanEnsemble``): its widths, base activation and parameters per model, and the
    checkpoint of each of its models that was sent (``state_dict_of``, by position)."""

    def __init__(
        self, layers: list[int], base: str, family_base: str | None, parameters: int
    ) -> None:
        self.layers = layers
        self.base = base
        self.family = _Family(family_base)
        self.parameters = parameters
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def parameter_count(self) -> int:
        """Trainable parameters of one model."""
        return self.parameters

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]:
        """Model ``index`` of the group as its checkpoint's state dict (CPU tensors)."""
        return dict(self.states[index])


class SentModels:
    """A decoded point's models (its ``ExperimentResult.ensemble``), numbered as the point
    numbers them."""

    def __init__(self, placed: Sequence[tuple[SentGroup, int]]) -> None:
        self.placed = list(placed)

    def locate(self, index: int) -> tuple[Any, int]:
        """The ``SentGroup`` holding model ``index`` (where a trained result gives the ensemble
        itself) and the model's position there."""
        return self.placed[index]

    def state_dict_of(self, index: int) -> dict[str, torch.Tensor]:
        group, j = self.placed[index]
        return group.state_dict_of(j)


def _array_back(value: tuple[Any, bytes]) -> torch.Tensor:
    (dtype, stored, shape), data = value
    values = np.frombuffer(data, dtype=np.dtype(stored)).reshape(shape)
    return torch.from_numpy(values.copy()).to(_torch_dtype(dtype))


def _rows_back(value: tuple[Any, ...]) -> torch.Tensor:
    (dtype, stored, shape), kept, data = value
    values = np.frombuffer(b"".join(data), dtype=np.dtype(stored))
    rows = torch.from_numpy(values.reshape(len(data), *shape[1:]).copy()).to(_torch_dtype(dtype))
    if kept is None:
        return rows
    out = torch.full(shape, float("nan"), dtype=rows.dtype)
    out[torch.tensor(kept, dtype=torch.long)] = rows
    return out


def _tensor_exact(layout: Any, data: bytes) -> torch.Tensor:
    dtype, shape, stride, offset = layout
    storage = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0)
    tensor = torch.empty(0, dtype=_torch_dtype(dtype))
    return tensor.set_(storage.untyped_storage(), offset, shape, stride)


def _records_back(doc: dict[str, Any]) -> list[LogRecord]:
    from aaf_cli.train import LogRecord

    if "records" in doc:
        return list(doc["records"])
    steps = _array_back(doc["steps"]).tolist()
    elapsed = _array_back(doc["elapsed"]).tolist()
    by_record = {q: _rows_back(v).T.contiguous() for q, v in doc["quantities"]}
    params = [(k, _rows_back(v).T.contiguous()) for k, v in doc["params"]]
    return [
        LogRecord(
            step=step,
            elapsed=elapsed[r],
            train_loss=by_record["train_loss"][r],
            test_loss=by_record["test_loss"][r],
            recovery=by_record["recovery"][r],
            params={k: v[r] for k, v in params},
            val_loss=by_record["val_loss"][r] if "val_loss" in by_record else None,
            evals=by_record["evals"][r] if "evals" in by_record else None,
        )
        for r, step in enumerate(steps)
    ]


def _list_back(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    stored, data = value
    items: list[Any] = np.frombuffer(data, dtype=np.dtype(stored)).tolist()
    return items


def _series_back(doc: list[Any]) -> list[Series]:
    from aaf_cli.results import Series

    out = []
    if doc and isinstance(doc[0], Series):
        return doc
    for variant, seed, diverged_at, lists, params, terms in doc:
        s = Series(variant, seed, diverged_at=diverged_at)
        for name, value in zip(_SERIES_LISTS, lists):
            setattr(s, name, _list_back(value))
        s.params = {k: _list_back(v) for k, v in params}
        s.terms = {k: _list_back(v) for k, v in terms}
        out.append(s)
    return out


def _point_back(doc: dict[str, Any], models: list[tuple[SentGroup, int]]) -> ExperimentResult:
    from aaf_cli.experiment import ExperimentResult, members
    from aaf_cli.targets import Dataset
    from aaf_cli.train import TrainResult

    def tensor(value: tuple[Any, ...]) -> torch.Tensor:
        return _rows_back(value) if len(value) == 3 else _array_back((value[0], value[1]))

    result = dict(doc["result"])
    result.update(
        records=_records_back(result["records"]),
        steps_to_threshold=_array_back(result["steps_to_threshold"]),
        diverged_at=_array_back(result["diverged_at"]),
        predictions=_rows_back(result["predictions"]),
    )
    point = dict(doc)
    point.update(
        members=members(doc["config"]) if doc["members"] is None else doc["members"],
        data=Dataset(*(tensor(doc["data"][name]) for name in _DATA)),
        result=TrainResult(**result),
        ensemble=SentModels([models[k] for k in doc["ensemble"]]),
    )
    if doc["tuning"] is not None:
        head, series = doc["tuning"]
        point["tuning"] = dataclasses.replace(head, series=_series_back(series))
    return ExperimentResult(**point)


def decode(blob: bytes) -> list[ExperimentResult]:
    """The results that ``encode`` made ``blob`` of, ready for ``writing.write_points``: equal
    to the trained ones in all their folders read (not trainable: see the module's docstring).

    Raises:
        PayloadError: ``blob`` is no payload, one of another format (another aaf's), or
            damaged.
    """
    head = len(MAGIC) + 1
    if len(blob) < head or blob[: len(MAGIC)] != MAGIC:
        raise PayloadError("a Ray task's results are not an aaf payload")
    if blob[len(MAGIC)] != FORMAT:
        raise PayloadError(
            f"a Ray task's results are in payload format {blob[len(MAGIC)]}, this aaf reads "
            f"format {FORMAT}: install the same aaf on every node"
        )
    try:
        document = pickle.loads(zlib.decompress(blob[head:]))
    except (zlib.error, pickle.UnpicklingError, EOFError) as exc:
        raise PayloadError(f"a Ray task's results are damaged ({exc})") from None
    # Each key a string of its own, as in the trained checkpoints (see _Encoder.tensor_exact).
    keys = [key.encode().decode() for key in document["keys"]]
    groups = [SentGroup(*facts) for facts in document["groups"]]
    models: list[tuple[SentGroup, int]] = []
    for g, j, state in document["models"]:
        group = groups[g]
        group.states[j] = {keys[k]: _tensor_exact(lay, data) for k, lay, data in state}
        models.append((group, j))
    return [_point_back(p, models) for p in document["points"]]
