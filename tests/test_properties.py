"""Property-based tests of ``load_config``: whatever the YAML file and the ``--set`` overrides hold,
it returns a config or raises a one-line ``ConfigError`` that names the file, never anything else.
"""

from __future__ import annotations

import copy
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from aaf_cli.config import DEFAULT_SOURCE, ExperimentConfig, load_config
from aaf_cli.errors import ConfigError
from aaf_cli.registry import ACTIVATIONS, KINDS
from aaf_cli.targets import TARGETS

from .conftest import SMOKE

# Every message lists at most one set of valid names (keys, targets, activations, kinds) next to
# the key path and a shortened value; the inputs below are kept short, so this bound holds.
MAX_MESSAGE = 1000


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [model for arg in typing.get_args(tp) for model in _models_in(arg)]


def _field_names(root: type[BaseModel]) -> set[str]:
    """Every key of ``root`` and of the models below it, those of every variant kind included."""
    names: set[str] = set()
    todo, seen = [root], set()
    while todo:
        model = todo.pop()
        if model not in seen:
            seen.add(model)
            for name, field in model.model_fields.items():
                names.add(name)
                todo.extend(_models_in(field.annotation))
    return names


CONFIG_KEYS = sorted(
    {
        *("name", "seeds", "device", "threads", "dtype", "target", "params", "domain"),
        *("n_train", "n_test", "sampling", "noise", "seed", "resample", "model", "layers"),
        *("activation", "init", "init_std", "variants", "kind", "n", "a0", "lr", "train"),
        *("optimizer", "betas", "eps", "momentum", "steps", "log_every", "threshold", "compile"),
    }
    | _field_names(ExperimentConfig)
)
NAMES = sorted({*KINDS, *ACTIVATIONS, *TARGETS, "grid", "random", "adam", "sgd", "auto", "1e-3"})

PROPERTY = settings(max_examples=500, deadline=None, derandomize=True)

# One folder for the whole module: hypothesis calls a test many times within one fixture scope.
_TMP = tempfile.TemporaryDirectory(prefix="aaf-properties-")
TMP = Path(_TMP.name)


def _default_tree() -> dict[str, Any]:
    return ExperimentConfig().model_dump(mode="json")


DEFAULT_TREE = _default_tree()
# libyaml's dumper where there is one: the pure-Python one costs a quarter of the run time.
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(tree: Any) -> str:
    return yaml.dump(tree, Dumper=DUMPER, sort_keys=False, allow_unicode=True)


def _load(
    path: Path | None, overrides: Sequence[str] = (), limit: int = MAX_MESSAGE
) -> ExperimentConfig | str:
    """The config, or the message of a proper ``ConfigError``; any other outcome fails the test.

    A message echoes the ``--set`` text, so a long override may raise ``limit``.
    """
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        text = str(exc)
        assert text, "empty message"
        assert text.splitlines() == [text], f"not one line: {text!r}"
        assert (str(path) if path is not None else DEFAULT_SOURCE) in text, text
        assert len(text) < limit, f"{len(text)} characters: {text[:200]!r}..."
        return text


def _write(name: str, content: str | bytes) -> Path:
    path = TMP / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# --------------------------------------------------------------------------------------------
# Strategies

short_text = st.text(max_size=16)
keys = st.one_of(
    st.sampled_from(CONFIG_KEYS),
    short_text,
    st.integers(-3, 3),
    st.booleans(),
    st.none(),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**300), max_value=10**300),
    st.floats(),  # nan and +-inf included
    short_text,
    st.sampled_from(NAMES),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=16,
)
# Text that is mostly YAML punctuation, so that the parser sees flow collections, anchors, tags,
# block scalars, merge keys and documents, not only plain scalars.
yamlish_text = st.lists(
    st.sampled_from([*"{}[]:,-&*!|>'\"#%@?<.~ \t\n\r", "ab", "1", "0x", "e", "!!", "<<", "\\"]),
    max_size=40,
).map("".join)


def _nodes(tree: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The paths of every node below ``tree`` (not ``tree`` itself)."""
    found: list[tuple[str | int, ...]] = []
    items: list[tuple[str | int, Any]] = []
    if isinstance(tree, dict):
        items = list(tree.items())
    elif isinstance(tree, list):
        items = list(enumerate(tree))
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_nodes(value, (*prefix, key)))
    return found


def _get(tree: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


@st.composite
def mutated_defaults(draw: st.DrawFn) -> dict[str, Any]:
    """The built-in default config with one or two random changes."""
    tree = copy.deepcopy(DEFAULT_TREE)
    for _ in range(draw(st.integers(1, 2))):
        action = draw(st.sampled_from(["replace", "nudge", "delete", "add", "variant"]))
        if action == "variant":
            # A variant of any kind, so that every kind's fields are checked and round-tripped.
            name = draw(st.one_of(st.sampled_from(["new", "other"]), keys))
            variant = {"kind": draw(st.sampled_from(sorted(KINDS))), "name": name}
            if draw(st.booleans()):
                variant[draw(keys)] = draw(trees)
            variants = tree.get("variants")
            if isinstance(variants, list) and variants:
                variants[draw(st.integers(0, len(variants) - 1))] = variant
            else:
                tree["variants"] = [variant]
            continue
        if action == "add":
            sections = [(), *(p for p in _nodes(tree) if isinstance(_get(tree, p), dict))]
            section = _get(tree, draw(st.sampled_from(sections)))
            section[draw(keys)] = draw(trees)
            continue
        paths = _nodes(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _get(tree, path[:-1])
        if action == "delete":
            del parent[path[-1]]
        elif action == "nudge":
            parent[path[-1]] = draw(_alike(parent[path[-1]]))
        else:
            parent[path[-1]] = draw(trees)
    return tree


def _alike(value: Any) -> st.SearchStrategy[Any]:
    """Values of the type of ``value``: a mutation that keeps many configs valid."""
    if isinstance(value, bool) or value is None:
        return st.one_of(st.booleans(), st.none(), st.sampled_from(NAMES))
    if isinstance(value, int):
        return st.integers(-2, 300)
    if isinstance(value, float):
        return st.one_of(st.floats(-1.0, 20.0), st.sampled_from([1e-8, 0.999, 1e4]))
    if isinstance(value, str):
        return st.sampled_from(NAMES)
    if isinstance(value, list):
        return st.lists(st.one_of(st.integers(0, 30), st.floats(-3.0, 3.0)), max_size=5)
    return st.dictionaries(st.sampled_from(CONFIG_KEYS), scalars, max_size=2)


key_paths = st.lists(
    st.one_of(st.sampled_from(CONFIG_KEYS), st.integers(-3, 4).map(str), st.text(max_size=6)),
    min_size=1,
    max_size=4,
).map(".".join)
VALUES = [
    *("", " ", "1", "-1", "0", "0.5", "1e-3", "1.0e-2", "true", "no", "null", "~", ".nan"),
    *("-.inf", "0x1f", "[1, 2]", "[1, 8, 1]", "[]", "{a: 1}", "{}", "[", "]", "{", "'x", '"x'),
    *("!!python/object x", "!!int abc", "!foo x", "&a *a", "&a [*a]", "*a", "a: b", "- 1", "|"),
    *("#", "%YAML", "---", "2020-02-30", "sine", "global", "adam", "tanh"),
]
values = st.one_of(
    st.sampled_from(VALUES),
    scalars.map(str),
    st.lists(scalars.map(str), max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
    st.text(max_size=16),
)
LEAVES = [p for p in _nodes(DEFAULT_TREE) if not isinstance(_get(DEFAULT_TREE, p), dict)]


@st.composite
def plausible_override(draw: st.DrawFn) -> str:
    """A real key path set to a value of its type, so that many of them load."""
    path = draw(st.sampled_from(LEAVES))
    value = draw(_alike(_get(DEFAULT_TREE, path)))
    return ".".join(map(str, path)) + "=" + _dump(value).removesuffix("\n...\n").strip()


overrides = st.lists(
    st.one_of(
        plausible_override(),
        st.builds(lambda k, v: f"{k}={v}", key_paths, values),
        st.text(max_size=24),
    ),
    min_size=1,
    max_size=3,
)


# --------------------------------------------------------------------------------------------
# 1. Random YAML files


@PROPERTY
@given(content=st.one_of(st.text(max_size=200), yamlish_text, st.binary(max_size=64)))
def test_any_text_loads_or_fails_with_one_line(content: str | bytes) -> None:
    _load(_write("text.yaml", content))


@PROPERTY
@given(tree=st.one_of(st.dictionaries(keys, trees, max_size=6), trees))
def test_any_yaml_tree_loads_or_fails_with_one_line(tree: Any) -> None:
    _load(_write("tree.yaml", _dump(tree)))


@PROPERTY
@given(tree=mutated_defaults())
def test_mutated_default_loads_or_fails_and_round_trips(tree: dict[str, Any]) -> None:
    cfg = _load(_write("mutated.yaml", _dump(tree)))
    if isinstance(cfg, ExperimentConfig):
        # 3. What loads is written back by to_yaml() and loads again as the same config.
        assert load_config(_write("resolved.yaml", cfg.to_yaml("# resolved\n"))) == cfg


# --------------------------------------------------------------------------------------------
# 2. Random --set overrides


@PROPERTY
@given(texts=overrides)
def test_any_overrides_load_or_fail_with_one_line(texts: list[str]) -> None:
    _load(None, texts)
    cfg = _load(SMOKE, texts)
    if isinstance(cfg, ExperimentConfig):
        assert load_config(_write("overridden.yaml", cfg.to_yaml())) == cfg


def teardown_module() -> None:
    _TMP.cleanup()


# --------------------------------------------------------------------------------------------
# Regressions: inputs that once escaped as a crash or a message of several lines


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # RecursionError: an anchor inside itself, or nesting deeper than Python's stack.
        ("seeds: &x [*x]\n", ": YAML nested too deeply, or an anchor inside itself"),
        ("[" * 1000, ": YAML nested too deeply"),
        # ValueError, KeyError, AttributeError from PyYAML's constructors.
        ("train: {steps: 1" + "0" * 5000 + "}\n", ": invalid YAML value: Exceeds the limit"),
        ("name: 2020-02-30\n", ": invalid YAML value: day is out of range for month"),
        ("name: !!int abc\n", ": invalid YAML value: invalid literal for int()"),
        ("name: !!bool abc\n", ": invalid YAML value: 'abc'"),
        ("name: !!timestamp abc\n", ": invalid YAML value:"),
        # ValueError from repr() of a 6000-digit int while formatting the message.
        ("train: {steps: 0x" + "f" * 5000 + "}\n", ":1:9: train.steps: Input should be less"),
        # Line breaks: PyYAML's reader error, and names echoed from the file.
        ("\x1f", ":1:1: invalid YAML: unacceptable character #x001f"),
        ("name: x\nseeds: 1\x00\n", ":2:9: invalid YAML: unacceptable character #x0000"),
        ('"\\r": 1\n', ":1:1: \\r: unknown key '\\r' (valid keys: name,"),
        ('"a\\nb": 1\n"a\\nb": 2\n', ":2:1: a\\nb: duplicate key"),
        ('target: {name: "a\\u2028b"}\n', "target.name: unknown target 'a\\u2028b'"),
        ('target: {params: {"x\\ny": 1}}\n', "has no parameter 'x\\ny'"),
    ],
)
def test_file_regressions(content: str, expected: str) -> None:
    path = _write("regression.yaml", content)
    message = _load(path)
    assert isinstance(message, str) and message.startswith(str(path)), message
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ValueError from int() on key parts that str.isdigit() accepts.
        ("variants.--1.n=5", "variants.--1.n: '--1' is not a list index"),
        ("variants.\u00b2.n=5", "variants.\u00b2.n: '\u00b2' is not a list index"),
        ("variants." + "9" * 5000 + ".n=5", "' is not a list index"),
        # ValueError, KeyError, RecursionError from yaml.safe_load of the value.
        ("name=2020-02-30", "name: value is not valid YAML: day is out of range for month"),
        ("name=!!bool abc", "name: value is not valid YAML: 'abc'"),
        ("train.steps=1" + "0" * 5000, "train.steps: value is not valid YAML: Exceeds the limit"),
        ("seeds=" + "[" * 1000, "seeds: value is nested too deeply"),
        # Line breaks in the echoed override and key.
        ("train.steps=1\n2", "(--set train.steps=1\\n2): train.steps: Input should be"),
        ("a\nb=1", "(--set a\\nb=1): a\\nb: unknown key 'a\\nb'"),
    ],
)
def test_override_regressions(text: str, expected: str) -> None:
    message = _load(None, [text], limit=MAX_MESSAGE + 3 * len(text))
    assert isinstance(message, str) and message.startswith(DEFAULT_SOURCE), message
    assert expected in message


def test_a_file_name_too_long_is_a_config_error() -> None:
    # OSError (ENAMETOOLONG) from Path.exists() once escaped _read_text.
    path = TMP / ("a" * 300 + ".yaml")
    message = _load(path)
    assert message == f"{path}: cannot read: File name too long"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("seeds=abc", "seeds"),
        ("seeds=[1, -1]", "seeds.1"),  # the bad item, not "not a valid integer"
        ("train.compile=maybe", "train.compile"),
        ("target.params.freq=abc", "target.params.freq"),
    ],
)
def test_union_tags_are_not_part_of_the_key(text: str, key: str) -> None:
    # _walk once kept pydantic's union tags: 'seeds.int', 'train.compile.bool', '...freq.float'.
    message = _load(None, [text])
    assert isinstance(message, str) and message.startswith(f"{DEFAULT_SOURCE} (--set {text}): ")
    assert message.split(": ")[1] == key


# --------------------------------------------------------------------------------------------
# 4. Random expressions as targets, in a file and through --set

EXPR_TOKENS = [
    "x", "x1", "x2", "y", "1", "0.5", "2e3", "pi", "+", "-", "*", "/", "**", "%", "(", ")",
    "sin", "cos", "exp", "log", "sqrt", "min", "max", ",", "if", "else", "<", "<=", "==",
    "and", "or", "not", ".", "__class__", "[", "]", "'", '"', "lambda", ":", "__import__",
]  # fmt: skip
expressions = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(EXPR_TOKENS), min_size=1, max_size=12).map(" ".join),
)


@PROPERTY
@given(expr=expressions, inputs=st.sampled_from([1, 2]))
def test_any_expression_target_loads_or_fails_with_one_line(expr: str, inputs: int) -> None:
    tree = {
        "target": {"expr": expr, "domain": [-1, 1]},
        "model": {"layers": [inputs, 4, 1]},
    }
    result = _load(_write("expr.yaml", yaml.safe_dump(tree)))
    if isinstance(result, ExperimentConfig):
        assert result.target.expr == expr
    override = _load(
        SMOKE,
        ["target.name=null", "target.params={}", "target.domain=[0, 1]", f"target.expr={expr}"],
        limit=MAX_MESSAGE + 3 * len(expr),
    )
    assert isinstance(override, (ExperimentConfig, str))
