from __future__ import annotations

from pathlib import Path

import pytest

from aaf_cli.config import ExperimentConfig, GlobalVariant, load_config
from aaf_cli.errors import ConfigError

from .conftest import CONFIGS, SMOKE


def test_builtin_default_is_the_elu_config() -> None:
    assert load_config(None) == load_config(CONFIGS / "elu.yaml")
    cfg = load_config(None)
    assert cfg.model.layers == [1, 20, 20, 1] and cfg.model.activation == "elu"
    assert cfg.train.lr == 3e-3 and cfg.tune is not None and cfg.tune.seeds == 3
    adaptive = cfg.variants[1]
    assert isinstance(adaptive, GlobalVariant)
    assert adaptive.n == 10 and adaptive.a_init == pytest.approx(0.1)
    assert cfg.train.optimizer == "adam"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("**/*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid_and_round_trip(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    written = tmp_path / "config.yaml"
    written.write_text(cfg.to_yaml("# header\n"))
    assert load_config(written) == cfg


def test_target_defaults_fill_domain_points_and_params() -> None:
    cfg = load_config(None, ["target.name=rspa_discontinuous"])
    assert cfg.target.domain == (-3.0, 3.0) and cfg.target.n_train == 300
    assert cfg.target.params == {}
    poly = load_config(None, ["target.name=polynomial"])
    assert poly.target.params == {"coeffs": [0.0, -1.0, 0.0, 1.0]}


def test_overrides_reach_nested_keys_and_list_items() -> None:
    cfg = load_config(
        None,
        ["train.steps=200", "variants.1.n=5", "model.layers=[1, 8, 8, 1]", "seeds=[3, 1]"],
    )
    assert cfg.train.steps == 200
    adaptive = cfg.variants[1]
    assert isinstance(adaptive, GlobalVariant)
    # a0 follows n when not given: the adaptive network still starts where the fixed one does.
    assert adaptive.n == 5 and adaptive.a_init == pytest.approx(0.2)
    assert cfg.model.layers == [1, 8, 8, 1]
    assert cfg.seed_list == [3, 1]


def test_yaml_scientific_notation_without_dot_is_a_number() -> None:
    # PyYAML reads "1e-3" as a string; the schema still takes it as the number it means.
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3


def test_config_is_frozen() -> None:
    cfg = ExperimentConfig()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is internal
        cfg.train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("train:\n  lrr: 0.1\n", "train.lrr", "did you mean 'lr'"),
        ("variants:\n  - {kind: globl}\n", "variants.0.kind", "did you mean 'global'"),
        ("variants:\n  - {name: a}\n", "variants.0.kind", "missing 'kind'"),
        ("variants:\n  - {kind: global, n: 0.5}\n", "variants.0.n", "greater than or equal to 1"),
        ("seeds: [1, 1]\n", "seeds", "repeat"),
        ("variants:\n- {name: a, kind: fixed}\n- {name: a, kind: fixed}\n", "variants", "unique"),
        ("target:\n  domain: [2, 1]\n", "target.domain", "below"),
        ("target:\n  params: {freq: [1, 2]}\n", "target.params", "must be a number"),
        ("model:\n  layers: [2, 4, 1]\n", "model.layers", "has one input"),
        ("model:\n  layers: [1, 4, 2]\n", "model.layers", "must end with 1"),
        ("train:\n  lr: .nan\n", "train.lr", "finite"),
        ("name: ../escape\n", "name", "pattern"),
    ],
)
def test_schema_errors_name_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert fragment in info.value.message
    assert str(path) in str(info.value)
    assert info.value.line is not None


def test_errors_point_at_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  steps: 10\n  lr: -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:4:3: train.lr: ")


def test_error_from_an_override_names_the_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "smoke.yaml", ["train.lr=0"])
    assert "(--set train.lr=0)" in str(info.value)
    assert info.value.key == "train.lr"


def test_set_with_a_mapping_replaces_the_whole_section() -> None:
    cfg = load_config(SMOKE, ["target={expr: 'sin(3*x)', domain: [0, 2]}"])
    assert cfg.target.expr == "sin(3*x)" and cfg.target.name is None
    assert cfg.target.domain == (0.0, 2.0) and cfg.target.n_train == 300
    cfg = load_config(SMOKE, ["variants.1={kind: layer, n: 5}"])
    assert cfg.variants[1].kind == "layer" and cfg.variants[1].name == "layer-n5"
