"""A config file's text: YAML parsed safely with the line of every key, and ``--set`` overrides.

Shared by the experiment config (``config.load_config``) and the sweep spec
(``sweeps.spec``): both read YAML the same way (bounded in size and depth, every key's line and
column kept for messages) and apply ``key.path=value`` overrides the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from aaf_cli.errors import ConfigError


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped as repr() would."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Located:
    """Line and column (1-based) of every key path in a YAML document."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str | int, ...], tuple[int, int]] = {}

    def find(self, path: Sequence[str | int]) -> tuple[int, int] | None:
        path = tuple(path)
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return None


MAX_YAML_NODES = 100_000


def _locate(node: yaml.Node, source: str, path: tuple[str | int, ...], out: Located) -> None:
    out.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if len(out.marks) > MAX_YAML_NODES:
        # Anchors used many times over ("billion laughs") would otherwise take forever.
        raise ConfigError(
            source,
            "",
            f"the YAML document is too large (over {MAX_YAML_NODES} values once "
            "aliases are expanded)",
            node.start_mark.line + 1,
            node.start_mark.column + 1,
        )
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                line = key_node.start_mark.line + 1
                dotted = ".".join(str(p) for p in (*path, key))
                raise ConfigError(
                    source, dotted, "duplicate key", line, key_node.start_mark.column + 1
                )
            seen.add(key)
            _locate(value_node, source, (*path, key), out)
            # An error about a key's value points at the key's line.
            out.marks[path + (key,)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _locate(item, source, (*path, i), out)


def parse_yaml(text: str, source: str) -> tuple[Any, Located]:
    located = Located()
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return {}, located
            _locate(node, source, (), located)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError as exc:  # a duplicate key, whose name may hold a line break
        raise ConfigError(source, one_line(exc.key), exc.message, exc.line, exc.column) from None
    except RecursionError:
        raise ConfigError(
            source, "", "YAML nested too deeply, or an anchor inside itself"
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # PyYAML's constructors fail like this on 2020-02-30, !!int x, !!bool x, 5000-digit ints.
        problem = one_line(str(exc).split(";")[0])
        raise ConfigError(source, "", f"invalid YAML value: {problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            tag = problem.split("tag", 1)[1].strip().strip("'")
            tag = tag.replace("tag:yaml.org,2002:", "!!")
            problem = f"unsupported tag '{tag}' (configs are plain YAML: no tags)"
        else:
            problem = f"YAML syntax error: {problem}"
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise ConfigError(source, "", one_line(problem), line, column) from None
    except yaml.reader.ReaderError as exc:  # a control character; str(exc) has two lines
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        problem = str(exc).splitlines()[0]
        raise ConfigError(source, "", f"invalid YAML: {problem}", line, column) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", one_line(f"invalid YAML: {exc}")) from None
    return data, located


def read_text(path: Path) -> str:
    source = str(path)
    try:  # exists() raises too: a name too long, a folder that cannot be searched
        if not path.exists():
            raise ConfigError(source, "", "no such file")
        if path.is_dir():
            raise ConfigError(source, "", "is a directory, expected a YAML file")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# --set overrides


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Split ``key.path=value`` into a path (list indices as ints) and a YAML-parsed value."""
    where = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(where, "", "expected key.path=value, e.g. --set train.steps=200")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise ConfigError(where, key, "empty part in the key path")
    path: list[str | int] = [
        # Not int() of a 5000-digit index: Python refuses (ValueError) to convert one.
        int(p) if p.strip().removeprefix("-").isdecimal() and len(p) < 100 else p.strip()
        for p in parts
    ]
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(where, key, f"value is not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(where, key, "value is nested too deeply") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # PyYAML's constructors fail like this on 2020-02-30, !!int x, !!bool x, 5000-digit ints.
        problem = str(exc).split(";")[0]
        raise ConfigError(where, key, f"value is not valid YAML: {problem}") from None
    return path, value


def apply_override(
    data: dict[str, Any], path: Sequence[str | int], value: Any, text: str, defaults: Any
) -> None:
    """Set ``value`` at ``path`` in the raw config, materialising defaults (``defaults``: the
    config's defaults as plain data) along the way."""
    where = f"--set {text}"
    dotted = ".".join(str(p) for p in path)
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        defaults = _child(defaults, part)
        if isinstance(node, list):
            if not isinstance(part, int):
                raise ConfigError(where, dotted, f"'{part}' is not a list index")
            if not -len(node) <= part < len(node):
                prefix = ".".join(str(p) for p in path[:depth]) or "the config"
                raise ConfigError(
                    where, dotted, f"index {part} is out of range ({prefix} has {len(node)} items)"
                )
        elif isinstance(node, dict):
            if isinstance(part, int):
                part = str(part)
            if not last and part not in node:
                # A missing list (the default variants) is filled in so items can be indexed; a
                # missing section starts empty, so target-dependent defaults still apply.
                node[part] = copy.deepcopy(defaults) if isinstance(defaults, list) else {}
        else:
            prefix = ".".join(str(p) for p in path[:depth])
            raise ConfigError(where, dotted, f"'{prefix}' holds a value, not a section")
        if last:
            node[part] = value
        else:
            node = node[part]


def _child(tree: Any, part: str | int) -> Any:
    if isinstance(tree, dict):
        return tree.get(str(part))
    if isinstance(tree, list) and isinstance(part, int) and -len(tree) <= part < len(tree):
        return tree[part]
    return None
