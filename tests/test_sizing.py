"""Network sizes (``aaf_cli.sizing``): the torch-free parameter counts agree with the engine and
with the per-model networks, ``match:`` picks the nearest width within 5% of the baseline (or
refuses, naming the key), the verdicts say how the sizes compare, and the budget counts the
splines' FLOPs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from aaf_cli import sizing
from aaf_cli.budget import ELEMENTWISE_FLOPS, workload
from aaf_cli.config import ExperimentConfig, load_config
from aaf_cli.errors import ConfigError
from aaf_cli.experiment import build_ensemble
from aaf_cli.kan import KanNet
from aaf_cli.models import PlainMLP

#: Every kind, with the settings that change its count.
KINDS: list[dict[str, Any]] = [
    {"kind": "fixed"},
    {"kind": "fixed", "slope": 2.0},
    {"kind": "global"},
    {"kind": "layer"},
    {"kind": "neuron"},
    {"kind": "rowdy", "K": 3},
    {"kind": "rowdy", "K": 10},
    {"kind": "prelu"},
    {"kind": "swish"},
    {"kind": "rational", "degrees": [5, 4]},
    {"kind": "rational", "degrees": [3, 2]},
    {"kind": "spline", "per": "neuron"},
    {"kind": "spline", "per": "layer"},
    {"kind": "spline", "per": "neuron", "grid": 4, "order": 2},
    {"kind": "kan"},
    {"kind": "kan", "grid": 3, "order": 1},
    {"kind": "kan", "grid": 7, "order": 2},
]
#: One and two inputs, one to three hidden layers, unequal widths.
SHAPES = [[1, 5, 1], [1, 4, 7, 1], [2, 9, 1], [2, 3, 6, 2, 1]]

TWO_INPUTS = {"expr": "x1 * x2", "domain": [0, 1]}
# MLP [1, 20, 20, 1]: 20 + 20 + 400 + 20 + 20 + 1 parameters.
BASELINE_PARAMS = 481


def config(layers: list[int], variants: list[dict[str, Any]], **rest: Any) -> ExperimentConfig:
    """A validated config of ``variants`` on ``layers`` (a target with as many inputs)."""
    target = {"name": "sine"} if layers[0] == 1 else TWO_INPUTS
    data = {
        "seeds": 2,
        "tune": False,
        "target": target,
        "model": {"layers": layers, "activation": "tanh"},
        "variants": variants,
        **rest,
    }
    return ExperimentConfig.model_validate(data)


def label(entry: dict[str, Any]) -> str:
    return "-".join(f"{v}" for v in entry.values()).replace(" ", "")


@pytest.mark.parametrize("layers", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("entry", KINDS, ids=label)
def test_parameter_count_equals_the_engine_and_the_reference_network(
    entry: dict[str, Any], layers: list[int]
) -> None:
    cfg = config(layers, [entry])
    (v,) = cfg.variants
    (ensemble,) = build_ensemble(cfg, torch.device("cpu")).ensembles()
    reference = (
        KanNet(layers, v) if v.kind == "kan" else PlainMLP(layers, v.kind, "tanh", v, torch.float64)
    )
    trainable = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    counted = sizing.params(v, layers)
    assert counted == ensemble.parameter_count() == trainable
    # Every tensor of the ensemble leads with the model axis: two seeds, twice the count.
    assert sum(p.numel() for p in ensemble.parameters()) == 2 * counted
    # The engine's layers are the config's: nothing was resized without match.
    assert ensemble.layers == layers


@pytest.mark.parametrize("layers", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_mlp_flops_are_the_products_plus_biases_and_activations(layers: list[int]) -> None:
    """torch's own count of the products (2 per multiply-add), plus 1 per bias and 1 per
    activation (2 with a fixed slope: s * z)."""
    net = PlainMLP(layers, "fixed", "tanh", None, torch.float64)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, layers[0], dtype=torch.float64))
    products = counter.get_total_flops()
    hidden, biases = sum(layers[1:-1]), sum(layers[1:])
    cfg = config(layers, [{"kind": "fixed"}, {"kind": "fixed", "slope": 2.0, "name": "steep"}])
    plain, steep = cfg.variants
    assert sizing.flops(plain, layers) == products + biases + hidden
    assert sizing.flops(steep, layers) == products + biases + 2 * hidden
    # Every adaptive kind costs more than the plain network at the same widths.
    for entry in KINDS[2:]:
        (v,) = config(layers, [entry]).variants
        assert sizing.flops(v, layers) > sizing.flops(plain, layers), entry


# --------------------------------------------------------------------------------------------
# match: params / flops


def counts(cfg: ExperimentConfig, what: str = "params") -> dict[str, int]:
    return {v.name: sizing.measure(what, v, cfg.layers_of(v)) for v in cfg.variants}


def assert_nearest(cfg: ExperimentConfig, v: Any, what: str, target: int) -> None:
    """``v``'s width is the one whose count is nearest ``target``: one narrower or wider is
    not nearer."""
    layers = cfg.layers_of(v)
    width = layers[1]
    assert all(w == width for w in layers[1:-1]), layers
    mine = abs(sizing.measure(what, v, layers) - target)
    for other in (width - 1, width + 1):
        if other < 1:
            continue
        there = [layers[0], *([other] * (len(layers) - 2)), layers[-1]]
        assert abs(sizing.measure(what, v, there) - target) >= mine, (v.name, other)


MATCHED: list[dict[str, Any]] = [
    {"kind": "fixed", "name": "mlp"},
    {"kind": "global", "name": "gaaf"},
    {"kind": "neuron", "name": "nlaaf"},
    {"kind": "rowdy", "name": "rowdy", "K": 10},
    {"kind": "spline", "name": "spline"},
    {"kind": "spline", "name": "spline_layer", "per": "layer", "grid": 8},
    {"kind": "kan", "name": "kan1", "layers": [1, 5, 1]},
    {"kind": "kan", "name": "kan2", "layers": [1, 5, 5, 1]},
    {"kind": "kan", "name": "kan_g3", "grid": 3, "order": 1},
    {"kind": "fixed", "name": "steep", "slope": 2.0},
    {"kind": "layer", "name": "deep", "layers": [1, 8, 8, 8, 1]},
]


def test_match_params_brings_every_variant_within_5_percent_of_the_baseline() -> None:
    cfg = config([1, 20, 20, 1], MATCHED, match="params")
    baseline = cfg.baseline_variant
    assert baseline.name == "mlp"
    assert baseline.layers is None and cfg.layers_of(baseline) == [1, 20, 20, 1]
    got = counts(cfg)
    assert got["mlp"] == BASELINE_PARAMS
    depth = {"kan1": 1, "kan2": 2, "deep": 3}
    for v in cfg.variants[1:]:
        layers = cfg.layers_of(v)
        assert abs(got[v.name] - BASELINE_PARAMS) <= 0.05 * BASELINE_PARAMS, (v.name, got)
        assert len(layers) - 2 == depth.get(v.name, 2), (v.name, layers)
        assert layers[0] == 1 and layers[-1] == 1
        assert_nearest(cfg, v, "params", BASELINE_PARAMS)
        assert sizing.matched_by(cfg, v) == "params"
    assert sizing.matched_by(cfg, baseline) is None
    # Hand-checked widths: N-LAAF w^2 + 6w + 1 = 476 at 19, Rowdy (K = 10) w^2 + 4w + 39 = 476
    # at 19, a KAN [1, w, 1] with G + k + 2 = 10 per edge 20w = 480 at 24, [1, w, w, 1]
    # 10 (w^2 + 2w) = 480 at 6, the same network at a fixed slope 481 at 20.
    assert cfg.layers_of(cfg.variants[2]) == [1, 19, 19, 1] and got["nlaaf"] == 476
    assert cfg.layers_of(cfg.variants[3]) == [1, 19, 19, 1] and got["rowdy"] == 476
    assert cfg.layers_of(cfg.variants[6]) == [1, 24, 1] and got["kan1"] == 480
    assert cfg.layers_of(cfg.variants[7]) == [1, 6, 6, 1] and got["kan2"] == 480
    assert cfg.layers_of(cfg.variants[9]) == [1, 20, 20, 1] and got["steep"] == 481
    # L-LAAF [1, w, w, w, 1]: 2w^2 + 5w + 4 = 466 at 14 (529 at 15).
    assert cfg.layers_of(cfg.variants[10]) == [1, 14, 14, 14, 1] and got["deep"] == 466
    # The engine builds those widths, and counts what sizing does.
    built = build_ensemble(cfg, torch.device("cpu")).ensembles()
    assert sorted(m.variant for e in built for m in e.members) == sorted(2 * list(got))
    for ensemble in built:
        for m in ensemble.members:
            assert ensemble.parameter_count() == got[m.variant], m.variant


def test_match_through_overrides_and_per_variant_match() -> None:
    cfg = load_config(
        None,
        [
            "tune=off",
            "match=params",
            "variants=[{kind: fixed, name: mlp}, {kind: neuron, name: wide, match: none}, "
            "{kind: neuron, name: nlaaf}, {kind: neuron, name: by_flops, match: flops}, "
            "{kind: kan, name: kan, layers: [1, 5, 5, 1]}]",
        ],
    )
    mlp, wide, nlaaf, by_flops, kan = cfg.variants
    assert cfg.layers_of(mlp) == [1, 20, 20, 1]
    # match: none keeps the widths, and the verdicts will say the sizes differ.
    assert wide.layers is None and cfg.layers_of(wide) == [1, 20, 20, 1]
    assert sizing.matched_by(cfg, wide) is None
    assert cfg.layers_of(nlaaf) == [1, 19, 19, 1] and sizing.matched_by(cfg, nlaaf) == "params"
    assert cfg.layers_of(kan) == [1, 6, 6, 1]
    # match: flops against the baseline's FLOPs: 3 * 20 + 2 * 400 + 20 + 2 * 20 + 1 products
    # and biases, 40 activations.
    target = sizing.flops(mlp, [1, 20, 20, 1])
    assert target == 961
    mine = sizing.flops(by_flops, cfg.layers_of(by_flops))
    assert abs(mine - target) <= 0.05 * target
    assert sizing.matched_by(cfg, by_flops) == "flops"
    assert_nearest(cfg, by_flops, "flops", target)
    # N-LAAF: 2w^2 + 10w + 1 FLOPs, 913 at 19, 1001 at 20: 20 is nearer; its params are not
    # matched then (20 is not 19).
    assert cfg.layers_of(by_flops) == [1, 20, 20, 1] and mine == 1001


def test_per_variant_match_without_an_experiment_match() -> None:
    cfg = config(
        [1, 20, 20, 1],
        [{"kind": "neuron", "match": "params"}, {"kind": "fixed"}, {"kind": "rowdy"}],
    )
    neuron, fixed, rowdy = cfg.variants
    # The baseline is the fixed variant, wherever it stands.
    assert cfg.baseline_variant is fixed
    assert cfg.layers_of(neuron) == [1, 19, 19, 1] and sizing.matched_by(cfg, neuron) == "params"
    assert rowdy.layers is None and sizing.matched_by(cfg, rowdy) is None
    # A baseline with widths of its own is the one matched against.
    cfg = config(
        [1, 20, 20, 1],
        [{"kind": "fixed", "name": "fixed", "layers": [1, 10, 10, 10, 1]}, {"kind": "global"}],
        match="params",
    )
    fixed, gaaf = cfg.variants
    assert cfg.layers_of(fixed) == [1, 10, 10, 10, 1]
    # [1, w, w, 1] + 1 against 251 parameters: w^2 + 4w + 2, 223 at 13, 254 at 14.
    assert cfg.layers_of(gaaf) == [1, 14, 14, 1]
    assert counts(cfg) == {"fixed": 251, "global": 254}


def test_the_nearest_width_and_its_tolerance() -> None:
    cfg = config([1, 20, 20, 1], [{"kind": "fixed"}, {"kind": "neuron"}, {"kind": "kan"}])
    fixed, neuron, kan = cfg.variants
    layers, count, within = sizing.matched_layers("params", neuron, [1, 20, 20, 1], 481)
    assert (layers, count, within) == ([1, 19, 19, 1], 476, True)
    # Exactly between two widths: the smaller one. A KAN [1, w, 1] has 20w parameters.
    assert sizing.matched_layers("params", kan, [1, 7, 1], 150) == ([1, 7, 1], 140, False)
    assert sizing.matched_layers("params", kan, [1, 7, 1], 147) == ([1, 7, 1], 140, True)
    # Below the narrowest network: width 1.
    assert sizing.matched_layers("params", kan, [1, 7, 1], 3) == ([1, 1, 1], 20, False)
    # A plain MLP [1, w, 1] has 3w + 1: 19 lies 5% from 20 exactly (within), 1/18 is not.
    assert sizing.matched_layers("params", fixed, [1, 5, 1], 20) == ([1, 6, 1], 19, True)
    assert sizing.matched_layers("params", fixed, [1, 5, 1], 18) == ([1, 6, 1], 19, False)
    # FLOPs alike: [1, w, 1] costs 2w + w + 2w + 1 products and biases and w activations.
    assert sizing.matched_layers("flops", fixed, [1, 5, 1], 43) == ([1, 7, 1], 43, True)


def test_an_infeasible_match_is_refused_naming_the_key_and_the_nearest_width() -> None:
    """A KAN [2, w, w, 1] (10 parameters per edge: 10 (w^2 + 3w)) against the MLP
    [2, 20, 20, 1] (501): 400 at w = 5, 540 at w = 6; neither within 5%."""
    data = {
        "name": "far",
        "tune": False,
        "target": TWO_INPUTS,
        "model": {"layers": [2, 20, 20, 1]},
        "match": "params",
        "variants": [{"kind": "fixed", "name": "mlp"}, {"kind": "kan", "name": "kan"}],
    }
    cfg = config([2, 20, 20, 1], [{"kind": "kan"}])
    (kan,) = cfg.variants
    assert sizing.params(kan, [2, 5, 5, 1]) == 400 and sizing.params(kan, [2, 6, 6, 1]) == 540
    with pytest.raises(ConfigError) as info:
        load_config(data)
    error = info.value
    assert error.key == "variants.1.match"
    assert error.source == "<mapping>"
    for fragment in ("kan", "within 5%", "mlp's 501 parameters", "540 at layers [2, 6, 6, 1]"):
        assert fragment in error.message, error.message
    assert "\n" not in str(error)
    # Its own match: none lets it run at its widths; flops are no nearer for it.
    own = {"kind": "kan", "name": "kan", "match": "none"}
    cfg = load_config({**data, "variants": [{"kind": "fixed", "name": "mlp"}, own]})
    assert cfg.layers_of(cfg.variants[1]) == [2, 20, 20, 1]
    with pytest.raises(ConfigError, match="FLOPs per point"):
        load_config({**data, "variants": [{"kind": "fixed"}, {**own, "match": "flops"}]})


def test_overrides_on_a_matched_config_act_as_on_its_source() -> None:
    from aaf_cli import api

    data = {
        "tune": False,
        "match": "params",
        "variants": [{"kind": "fixed"}, {"kind": "neuron"}],
    }
    deeper = ["model.layers=[1, 30, 30, 30, 1]"]
    direct = api.load_config(data, deeper)
    assert direct.layers_of(direct.variants[1]) == [1, 29, 29, 29, 1]
    resolved = api.load_config(data)
    assert api.load_config(resolved, deeper) == api.load_config(data, deeper)
    unmatched = api.load_config(resolved, ["variants.1.match=none"])
    assert unmatched.layers_of(unmatched.variants[1]) == [1, 20, 20, 1]


# --------------------------------------------------------------------------------------------
# What the verdicts say about size


def test_size_words() -> None:
    sizes: dict[str, dict[str, int]] = {
        "mlp": {"parameters": 481, "flops": 961},
        "nlaaf": {"parameters": 476, "flops": 913},
        "wide": {"parameters": 521, "flops": 1041},
        "near": {"parameters": 505, "flops": 1200},
        "same": {"parameters": 481, "flops": 1001},
    }
    assert sizing.size_words("nlaaf", "mlp", "params", sizes) == (
        "at matched parameters (476 vs 481)"
    )
    assert sizing.size_words("nlaaf", "mlp", "flops", sizes) == (
        "at matched FLOPs per point (913 vs 961)"
    )
    # Unmatched and more than 5% apart (40 / 481 = 8%): a warning naming both counts.
    assert sizing.size_words("wide", "mlp", None, sizes) == (
        "not at equal size: wide has 521 parameters, mlp 481 (match: params compares at equal size)"
    )
    # Within 5% (24 / 481) or equal: nothing to say, whatever the FLOPs.
    assert sizing.size_words("near", "mlp", None, sizes) == ""
    assert sizing.size_words("same", "mlp", None, sizes) == ""
    # The baseline is the denominator: 481 is 4.99% below 506.
    assert sizing.size_words("mlp", "x", None, {**sizes, "x": {"parameters": 506}}) == ""
    assert "not at equal size" in sizing.size_words(
        "mlp", "x", None, {**sizes, "x": {"parameters": 507}}
    )


def test_matched_by_follows_the_variant_then_the_experiment() -> None:
    cfg = config(
        [1, 20, 20, 1],
        [
            {"kind": "fixed", "name": "mlp", "match": "flops"},
            {"kind": "global", "name": "a"},
            {"kind": "global", "name": "b", "match": "none"},
            {"kind": "neuron", "name": "c", "match": "flops"},
        ],
        match="params",
    )
    assert [sizing.matched_by(cfg, v) for v in cfg.variants] == [None, "params", None, "flops"]
    unmatched = config([1, 20, 20, 1], [{"kind": "fixed"}, {"kind": "global"}])
    assert [sizing.matched_by(unmatched, v) for v in unmatched.variants] == [None, None]


# --------------------------------------------------------------------------------------------
# The budget counts what the splines cost


@pytest.mark.parametrize(
    "entry", [{"kind": "kan"}, {"kind": "spline"}, {"kind": "spline", "per": "layer"}], ids=label
)
def test_budget_counts_the_splines_flops(entry: dict[str, Any]) -> None:
    fixed = config([1, 20, 20, 1], [{"kind": "fixed"}])
    spline = config([1, 20, 20, 1], [entry])
    (v,) = spline.variants
    plain, costly = workload(fixed), workload(spline)
    assert costly.step_flops > plain.step_flops and costly.log_flops > plain.log_flops
    # Both costed per point and step alike: a plain network by its weights and elementwise
    # work, the splines by sizing's FLOPs (2 per multiply-add there, 1 per weight here).
    weights = sizing.dense_params([1, 20, 20, 1])
    per_point = weights + ELEMENTWISE_FLOPS * 40
    ratio = sizing.flops(v, [1, 20, 20, 1]) / 2 / per_point
    assert costly.step_flops == pytest.approx(plain.step_flops * ratio, rel=1e-12)
    assert costly.log_flops == pytest.approx(plain.log_flops * ratio, rel=1e-12)
    # A finer grid costs more.
    finer = config([1, 20, 20, 1], [{**entry, "grid": 20}])
    assert workload(finer).step_flops > costly.step_flops


def test_budget_follows_the_matched_widths() -> None:
    """A matched variant is costed at the widths it trains at, not model.layers."""
    unmatched = config([1, 20, 20, 1], [{"kind": "fixed"}, {"kind": "kan", "layers": [1, 5, 1]}])
    matched = config(
        [1, 20, 20, 1], [{"kind": "fixed"}, {"kind": "kan", "layers": [1, 5, 1]}], match="params"
    )
    assert matched.layers_of(matched.variants[1]) == [1, 24, 1]
    assert workload(matched).step_flops > workload(unmatched).step_flops


# --------------------------------------------------------------------------------------------
# A matched run: the summary and the table


def test_a_matched_run_records_and_shows_its_sizes(tmp_path: Path) -> None:
    from rich.console import Console

    from aaf_cli import api, render

    run = api.run(
        {
            "name": "sized",
            "seeds": 2,
            "tune": False,
            "target": {"name": "sine", "n_train": 32, "n_test": 64},
            "model": {"layers": [1, 20, 20, 1], "activation": "tanh"},
            "match": "params",
            "variants": [
                {"kind": "fixed", "name": "mlp"},
                {"kind": "neuron", "name": "nlaaf"},
                {"kind": "rowdy", "name": "rowdy", "K": 3, "match": "flops"},
                {"kind": "kan", "name": "kan", "layers": [1, 5, 1], "match": "none"},
            ],
            "train": {"steps": 10, "log_every": 5},
        },
        runs_dir=tmp_path,
    )
    cfg = run.load_config()
    summary = run.summary
    assert summary is not None and summary["baseline"] == "mlp"
    variants = summary["variants"]
    for v in cfg.variants:
        entry = variants[v.name]
        assert entry["layers"] == cfg.layers_of(v)
        assert entry["parameters"] == sizing.params(v, cfg.layers_of(v))
        assert entry["flops"] == sizing.flops(v, cfg.layers_of(v))
    assert {k: v["matched"] for k, v in variants.items()} == {
        "mlp": None,
        "nlaaf": "params",
        "rowdy": "flops",
        "kan": None,
    }
    assert variants["nlaaf"]["layers"] == [1, 19, 19, 1] and variants["nlaaf"]["parameters"] == 476
    assert variants["kan"]["layers"] == [1, 5, 1] and variants["kan"]["parameters"] == 100
    verdicts = {c["variant"]: c["verdict"] for c in summary["comparisons"]}
    assert "; at matched parameters (476 vs 481)" in verdicts["nlaaf"]
    rowdy = variants["rowdy"]["flops"]
    assert f"; at matched FLOPs per point ({rowdy} vs 961)" in verdicts["rowdy"]
    assert "; not at equal size: kan has 100 parameters, mlp 481" in verdicts["kan"]
    # The table: params and FLOPs/point columns, '=' on the count a variant was matched on.
    buffer = Console(width=250, record=True, file=io.StringIO())
    render.report_table(summary, buffer)
    text = buffer.export_text()
    assert "params" in text and "FLOPs/point" in text
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    cells = {name: [c.strip() for c in line.split("│")] for name, line in rows.items()}
    assert "481" in cells["mlp"] and "961" in cells["mlp"]
    assert "=476" in cells["nlaaf"] and str(variants["nlaaf"]["flops"]) in cells["nlaaf"]
    assert f"={rowdy}" in cells["rowdy"] and str(variants["rowdy"]["parameters"]) in cells["rowdy"]
    assert "100" in cells["kan"] and not any(c.startswith("=") for c in cells["kan"])
