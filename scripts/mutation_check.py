#!/usr/bin/env python
"""Mutation check: does the test suite notice when the core's meaning changes?

A catalogue of small, meaning-changing edits ("mutants") to the core modules: a flipped sign,
an off-by-one, n*a written as a, the wrong percentile, a file written in place instead of
renamed... Each mutant is applied, alone, to a *copy* of the repository in a temporary folder,
and the tests chosen for it run there; the mutant is *killed* when a test fails, and *survives*
when every test passes (a meaning the suite does not pin down). The working tree is never
modified.

Usage (from the repository root, in its virtual environment)::

    python scripts/mutation_check.py                 # every mutant; exit 1 below --min
    python scripts/mutation_check.py --only stats    # the mutants of aaf_cli/stats.py
    python scripts/mutation_check.py --list          # the catalogue, nothing run
    python scripts/mutation_check.py --name 'sweeps.*'   # the mutants whose name matches
    python scripts/mutation_check.py --ignore-new    # without the tests written for it

A catalogue entry whose original text is no longer in its file is reported as ``stale`` (the
code moved on: update the entry), never skipped silently; ``tests/test_mutation_catalogue.py``
checks this on every test run.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the copy leaves out: environments, caches, run folders, version control.
IGNORED = (
    ".venv",
    "venv",
    ".git",
    "runs",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    "build",
    "dist",
    "*.pyc",
)

# Tests written to kill these mutants; --ignore-new leaves them out (the suite as it was).
NEW_TESTS = (
    "tests/test_known_answers.py",
    "tests/test_mutation_guards.py",
    "tests/test_faults.py::"
    "test_an_interrupt_at_any_point_of_an_atomic_write_leaves_no_temporary_file",
)

TIMEOUT_S = 300.0  # per mutant: a mutant that hangs the tests counts as killed

KA = "tests/test_known_answers.py"
GUARDS = "tests/test_mutation_guards.py"
STATS = "tests/test_stats.py"
ENGINE = "tests/test_engine.py"
DIVERGENCE = "tests/test_divergence.py"
KINDS = "tests/test_kinds.py"
EXPR = "tests/test_expr.py"
PDE = "tests/test_pde.py"
SWEEP = "tests/test_sweep.py"
SWEEP_PLAN = "tests/test_sweep.py::test_random_draws_are_deterministic_and_within_bounds"
TUNED = (
    "tests/test_sweep_tuned.py::"
    "test_selection_is_the_argmin_of_the_median_final_validation_on_a_constructed_case"
)
FAULTS_WRITE = (
    "tests/test_faults.py::"
    "test_an_interrupt_at_any_point_of_an_atomic_write_leaves_no_temporary_file"
)


@dataclass(frozen=True)
class Edit:
    """Replace ``original`` (which must occur exactly once in ``file``) by ``replacement``."""

    file: str
    original: str
    replacement: str


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest arguments: files or node ids, the fastest killers first

    @property
    def module(self) -> str:
        return Path(self.edits[0].file).stem


def mutant(
    name: str, file: str, original: str, replacement: str, description: str, *tests: str
) -> Mutant:
    return Mutant(name, description, (Edit(file, original, replacement),), tests)


S = "aaf_cli/stats.py"
R = "aaf_cli/results.py"
T = "aaf_cli/train.py"
A = "aaf_cli/activations.py"
MO = "aaf_cli/models.py"
RU = "aaf_cli/runs.py"
P = "aaf_cli/pipeline.py"
E = "aaf_cli/expr.py"
SW = "aaf_cli/sweeps/spec.py"
PDE_RUNS = "tests/test_pde_runs.py"
PDE_RESIDUAL = "aaf_cli/problems/pde/residual.py"
PDE_AUTODIFF = "aaf_cli/problems/pde/autodiff.py"
PDE_REFERENCE = "aaf_cli/problems/pde/reference.py"
TU = "aaf_cli/sweeps/tuned.py"
TUNING = "aaf_cli/tuning.py"
TUNING_TESTS = "tests/test_tuning.py"
DATA_TESTS = "tests/test_data_problem.py"
VERDICTS = "tests/test_verdicts.py"
PK = "aaf_cli/sweeps/packing.py"
LB = "aaf_cli/lbfgs.py"
LBFGS_TESTS = "tests/test_lbfgs.py"
PACKING = "tests/test_sweep_packing.py"

CATALOGUE: tuple[Mutant, ...] = (
    # ---- statistics
    mutant(
        "stats.bootstrap-quartiles",
        S,
        "alpha = (1 - level) / 2",
        "alpha = 0.25",
        "bootstrap CI from the 25th/75th percentiles instead of 2.5th/97.5th",
        f"{KA}::test_bootstrap_interval_matches_its_precomputed_value",
        f"{KA}::test_bootstrap_interval_has_the_normal_theory_width",
        STATS,
    ),
    mutant(
        "stats.quantile-no-interpolation",
        S,
        "return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)",
        "return ordered[lo]",
        "quantile takes the lower order statistic instead of interpolating",
        STATS,
    ),
    mutant(
        "stats.population-std",
        S,
        "std = statistics.stdev(vals) if len(vals) > 1 else 0.0",
        "std = statistics.pstdev(vals) if len(vals) > 1 else 0.0",
        "summary std with n instead of n-1",
        STATS,
    ),
    mutant(
        "stats.ranks-ties-min",
        S,
        "out[order[k]] = (i + j) / 2 + 1",
        "out[order[k]] = i + 1",
        "tied values get the lowest rank instead of the average rank",
        STATS,
    ),
    mutant(
        "stats.wilcoxon-keeps-zeros",
        S,
        "diffs = [d for d in differences if d != 0]",
        "diffs = list(differences)",
        "Wilcoxon keeps zero differences (instead of dropping them)",
        GUARDS,
        STATS,
    ),
    mutant(
        "stats.wilcoxon-one-sided",
        S,
        "return w_plus, min(1.0, 2 * lower / 2**n)",
        "return w_plus, min(1.0, lower / 2**n)",
        "exact Wilcoxon p-value one-sided instead of two-sided",
        STATS,
    ),
    mutant(
        "stats.wilcoxon-exact-only-up-to-7",
        S,
        "if n <= EXACT_WILCOXON_MAX_N:",
        "if n <= EXACT_WILCOXON_MAX_N // 4:",
        "exact Wilcoxon p-value only up to 7 pairs (normal approximation above)",
        GUARDS,
        STATS,
    ),
    mutant(
        "stats.wilcoxon-no-tie-correction",
        S,
        "tie_term = sum(t**3 - t for t in _tie_sizes(r)) / 48",
        "tie_term = 0.0",
        "normal approximation without the tie correction of the variance",
        GUARDS,
        STATS,
    ),
    mutant(
        "stats.speedup-inverted",
        S,
        "speedups = [b / max(v, 1) for v, b in pairs if v is not None and b is not None]",
        "speedups = [v / max(b, 1) for v, b in pairs if v is not None and b is not None]",
        "speed-up as variant/baseline steps instead of baseline/variant",
        STATS,
    ),
    mutant(
        "stats.wins-count-ties",
        S,
        "wins = sum(1 for s in seeds if final[s] < final_base[s])",
        "wins = sum(1 for s in seeds if final[s] <= final_base[s])",
        "a tie with the baseline counts as a win",
        GUARDS,
        STATS,
    ),
    # ---- results
    mutant(
        "results.median-seed-upper",
        R,
        "return kept[(len(kept) - 1) // 2].seed if kept else None",
        "return kept[len(kept) // 2].seed if kept else None",
        "median seed of an even count is the upper middle instead of the lower",
        GUARDS,
        STATS,
    ),
    mutant(
        "results.aggregate-keeps-diverged",
        R,
        "kept = [s for s in series if s.diverged_at is None]",
        "kept = list(series)",
        "loss bands include diverged seeds",
        STATS,
        DIVERGENCE,
    ),
    mutant(
        "results.iqr-deciles",
        R,
        "low.append(quantile(values, 0.25))",
        "low.append(quantile(values, 0.1))",
        "the IQR band's low edge at the 10th percentile",
        GUARDS,
        STATS,
    ),
    mutant(
        "results.best-is-max",
        R,
        "best_test, best_step = min(finite_test) if finite_test else (math.nan, -1)",
        "best_test, best_step = max(finite_test) if finite_test else (math.nan, -1)",
        "best test loss is the largest logged one",
        GUARDS,
        STATS,
    ),
    # ---- engine and optimisers
    mutant(
        "lbfgs.one-step-length-for-all",
        LB,
        "self.x[picked] += length[picked, None] * self.d[picked]",
        "self.x[picked] += length.max() * self.d[picked]",
        "every model moves by the longest accepted step, not its own",
        f"{LBFGS_TESTS}::test_batched_lbfgs_equals_independent_torch_lbfgs_on_a_regression",
    ),
    mutant(
        "lbfgs.first-step-unscaled",
        LB,
        "self.t[m] = min(1.0, 1.0 / g_sum[m]) * opts.lr",
        "self.t[m] = opts.lr",
        "the first iteration tries the full gradient step, not torch's min(1, 1/|g|_1)",
        f"{LBFGS_TESTS}::test_batched_lbfgs_equals_independent_torch_lbfgs_on_a_regression",
    ),
    mutant(
        "lbfgs.curvature-pairs-unchecked",
        LB,
        "add = later & (ys > 1e-10)",
        "add = later & (ys > -math.inf)",
        "curvature pairs with y.s <= 1e-10 enter the history (torch skips them)",
        f"{LBFGS_TESTS}::test_a_pair_without_curvature_is_not_stored_and_each_model_keeps_its_own_"
        "history",
    ),
    mutant(
        "lbfgs.no-loss-change-stop",
        LB,
        "            elif abs(self.front[m] - began) < opts.tolerance_change:\n"
        '                stopped = "change"',
        "            elif False:\n                pass",
        "a model whose loss stopped changing goes on (torch stops it)",
        f"{LBFGS_TESTS}::test_a_model_that_converges_stops_there_while_the_others_go_on",
    ),
    mutant(
        "lbfgs.lockstep",
        LB,
        "                and len(self.queue[m]) < self.lookahead\n",
        "                and not self.queue[m]\n",
        "a model whose search ended waits for the slowest one (rounds as in lockstep)",
        f"{LBFGS_TESTS}::test_batched_lbfgs_equals_independent_torch_lbfgs_on_a_regression",
    ),
    mutant(
        "lbfgs.hands-on-values-in-place",
        LB,
        "data, loss = self.values[0].clone(), self.values[1].clone()",
        "data, loss = self.values[0], self.values[1]",
        "a step rewrites the values it handed on before (a logged step shows the next one's)",
        f"{LBFGS_TESTS}::test_what_a_step_hands_on_is_that_iteration_while_models_run_ahead",
    ),
    mutant(
        "lbfgs.runs-past-max-iter",
        LB,
        "and (max_iter is None or self.n_iter[m] < max_iter)",
        "and (max_iter is None or self.n_iter[m] < max_iter + 1)",
        "a model starts an iteration past the run's last (evaluations spent for nothing)",
        f"{LBFGS_TESTS}::test_batched_lbfgs_equals_independent_torch_lbfgs_on_a_regression",
    ),
    mutant(
        "lbfgs.wolfe-curvature-loose",
        LB,
        "<= -c2 * gtd:\n            bracket, bracket_f, bracket_ref = [t]",
        "<= -0.99 * gtd:\n            bracket, bracket_f, bracket_ref = [t]",
        "the line search accepts a step with a weaker curvature condition than strong Wolfe's",
        f"{LBFGS_TESTS}::test_the_strong_wolfe_coroutine_equals_torchs_line_search",
    ),
    mutant(
        "train.threshold-on-test-loss",
        T,
        "        book.update(step, data, loss, self.run.threshold)\n        if update:\n"
        "            for",
        "        book.update(step, self.run.goal.evaluate(self.run.model)[0], loss, "
        "self.run.threshold)\n        if update:\n            for",
        "steps to threshold counted on the test loss",
        f"{KA}::test_steps_to_threshold_use_the_training_data_not_the_test_data",
        ENGINE,
    ),
    mutant(
        "train.threshold-off-by-one",
        T,
        "(data < threshold)\n"
        "            self.reached.copy_(torch.where(newly, step, self.reached))",
        "(data < threshold)\n"
        "            self.reached.copy_(torch.where(newly, step + 1, self.reached))",
        "steps to threshold one too many",
        f"{KA}::test_steps_to_threshold_use_the_training_data_not_the_test_data",
        ENGINE,
    ),
    mutant(
        "train.not-frozen",
        T,
        "rate = rate * (keep if present is None else keep & present)",
        "rate = rate",
        "a diverged model keeps being updated (its weights turn NaN)",
        f"{KA}::test_diverged_model_keeps_its_last_finite_parameters_bit_for_bit",
        f"{KA}::test_model_with_nan_loss_from_the_start_keeps_its_initial_parameters_under_adam",
        DIVERGENCE,
    ),
    mutant(
        "train.test-loss-on-train-points",
        T,
        "return self._measured(model, self.test), {}",
        "return self._measured(model, (self.x_train, self.y_train)), {}",
        "logged test loss computed on the training points",
        f"{KA}::test_logged_test_loss_is_the_checkpoints_mse_on_the_test_grid",
        ENGINE,
    ),
    mutant(
        "train.diverged-at-last-step",
        T,
        "self.diverged.copy_(torch.where(self.active & ~finite, step, self.diverged))",
        "self.diverged.copy_(torch.where(~finite, step, self.diverged))",
        "diverged_at is the last non-finite step instead of the first",
        f"{KA}::test_diverged_model_keeps_its_last_finite_parameters_bit_for_bit",
        DIVERGENCE,
    ),
    mutant(
        "train.final-step-not-logged",
        T,
        "logged = step % cfg.log_every == 0 or step == total or boundary",
        "logged = step % cfg.log_every == 0 or boundary",
        "the last step is logged only when it is a multiple of log_every",
        GUARDS,
        ENGINE,
    ),
    mutant(
        "train.adam-no-bias-correction",
        T,
        "bias1 = 1 - beta1**t",
        "bias1 = 1.0",
        "Adam without the first-moment bias correction",
        ENGINE,
    ),
    mutant(
        "train.sgd-ascent",
        T,
        "self.flat.sub_(grad * rate)",
        "self.flat.add_(grad * rate)",
        "SGD steps up the gradient",
        ENGINE,
    ),
    mutant(
        "train.shortcut-ignores-zero-rates",
        T,
        "if not (all_active and not self.zero_rates and present is None):",
        "if not (all_active and present is None):",
        "the no-mask shortcut also taken when a row has rate 0 (a NaN gradient reaches it)",
        "tests/test_engine_fast.py::test_flat_update_equals_the_per_parameter_update_bit_for_bit",
    ),
    mutant(
        "train.graph-bias-correction-off-by-one",
        T,
        "counts = range(1, max(cfg.steps, 1) + 1)",
        "counts = range(2, max(cfg.steps, 1) + 2)",
        "the device-side (compiled or CUDA graph) step uses Adam's bias corrections of the next "
        "step",
        "tests/test_engine_fast.py::test_the_device_side_step_matches_the_eager_step",
    ),
    mutant(
        "train.compiled-step-without-bookkeeping",
        T,
        "        book.update(index, data, loss, limit)\n",
        "",
        "the compiled step records no steps to threshold and no divergence",
        "tests/test_engine_fast.py::test_compiled_step_equals_the_reference_and_eager_in_float64",
        "tests/test_engine_fast.py::test_compiled_step_freezes_diverged_models_like_eager",
    ),
    mutant(
        "train.fallback-restarts-adam",
        T,
        "                    self.opt.t = local\n",
        "                    pass\n",
        "a run whose compiled step fails in mid-run goes on eagerly with Adam's bias corrections "
        "of its first steps",
        "tests/test_engine_fast.py::test_a_step_that_fails_to_compile_trains_eagerly_and_says_why",
    ),
    mutant(
        "train.compiled-step-ignores-thread-changes",
        T,
        "if not skip_guards or stance is None or threads != self.threads:",
        "if not skip_guards or stance is None:",
        "after the thread guard steps down, the compiled step keeps kernels made for the old "
        "thread count (its guards are skipped)",
        "tests/test_engine_fast.py::test_compiled_step_recompiles_once_when_a_thread_guard_steps_down",
    ),
    mutant(
        "train.graph-warmup-not-undone",
        T,
        "                    t.copy_(s)\n",
        "                    pass\n",
        "the warm-up steps before a CUDA-graph capture are not undone",
        "tests/test_engine_fast.py::test_the_device_side_step_matches_the_eager_step",
    ),
    # ---- activations
    Mutant(
        "activations.rowdy-no-j",
        "Rowdy's j-th term sin(n F_j x) instead of sin(j n F_j x), reference and batched",
        (
            Edit(
                A,
                "waves = torch.sin(x.unsqueeze(-1) * (self.j * self.n * self.freq))",
                "waves = torch.sin(x.unsqueeze(-1) * (self.n * self.freq))",
            ),
            Edit(
                A,
                "waves = torch.sin(z.unsqueeze(-1) * (self.j * n * self.freq[k]))",
                "waves = torch.sin(z.unsqueeze(-1) * (n * self.freq[k]))",
            ),
        ),
        (f"{KA}::test_rowdy_reference_unit_matches_the_hand_computed_value", KINDS),
    ),
    mutant(
        "activations.rowdy-batched-no-j",
        A,
        "waves = torch.sin(z.unsqueeze(-1) * (self.j * n * self.freq[k]))",
        "waves = torch.sin(z.unsqueeze(-1) * (n * self.freq[k]))",
        "Rowdy's j-th frequency lost in the batched family only",
        f"{KA}::test_rowdy_batched_family_matches_the_hand_computed_value",
        KINDS,
    ),
    mutant(
        "activations.slope-a-not-na",
        A,
        "return self.fn((self.n * self.a) * x)",
        "return self.fn(self.a * x)",
        "the reference Slope unit computes sigma(a x) instead of sigma(n a x)",
        KINDS,
    ),
    mutant(
        "activations.prescale-a-not-na",
        A,
        "return self.n * self._a(k)",
        "return self._a(k)",
        "the batched slope families scale by a instead of n*a",
        KINDS,
    ),
    mutant(
        "activations.recovery-form-swapped",
        A,
        'return float(layers) if form == "paper" else 1.0',
        'return float(layers) if form == "code" else 1.0',
        "slope recovery: the paper's and the code's numerators swapped",
        KINDS,
    ),
    mutant(
        "activations.recovery-mean",
        A,
        "total = torch.stack([torch.exp(m) for m in means], dim=-1).sum(-1)",
        "total = torch.stack([torch.exp(m) for m in means], dim=-1).mean(-1)",
        "slope recovery divides by the mean of exp(a_k) instead of the sum",
        KINDS,
    ),
    mutant(
        "activations.inverse-approximate",
        A,
        "if float(n_t * c) == 1.0:",
        "if abs(float(n_t * c) - 1.0) < 1e-6:",
        "a0 = fl(1/n) accepted although n * a0 != 1 exactly",
        KINDS,
    ),
    mutant(
        "activations.prelu-swapped",
        A,
        "return torch.where(z >= 0, z, self.p[k] * z)",
        "return torch.where(z >= 0, self.p[k] * z, z)",
        "batched PReLU scales the positive side",
        KINDS,
    ),
    # ---- models
    mutant(
        "models.prescale-weights-only",
        MO,
        "w, b = scale * w, scale * b",
        "w, b = scale * w, b",
        "n*a folded into the weights but not the bias",
        KINDS,
        ENGINE,
    ),
    mutant(
        "models.checkpoint-bias-of-model-0",
        MO,
        'state[f"linears.{k}.bias"] = b[index, 0].detach()',
        'state[f"linears.{k}.bias"] = b[0, 0].detach()',
        "every checkpoint gets model 0's biases",
        f"{KA}::test_logged_test_loss_is_the_checkpoints_mse_on_the_test_grid",
        KINDS,
        ENGINE,
    ),
    mutant(
        "models.variant-lr-ignored",
        "aaf_cli/stack.py",
        "[default_lr if m.lr is None else m.lr * scale for m in self.members],",
        "[default_lr for m in self.members],",
        "a variant's own learning rate is ignored",
        f"{KA}::test_diverged_model_keeps_its_last_finite_parameters_bit_for_bit",
        ENGINE,
        DIVERGENCE,
    ),
    # ---- run folders
    Mutant(
        "runs.write-in-place",
        "write_atomic writes straight to the final name, no rename",
        (
            Edit(
                RU,
                "fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)",
                "fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_BINARY, 0o666)",
            ),
            Edit(RU, "os.replace(tmp, path)", "pass"),
        ),
        (
            f"{KA}::test_failed_write_keeps_the_previous_complete_metrics_file",
            f"{KA}::test_metrics_file_is_renamed_into_place_whole",
        ),
    ),
    Mutant(
        "pipeline.metrics-in-place",
        "the run writes metrics.csv with Path.write_text instead of write_atomic",
        (
            Edit(
                P,
                'runs.write_atomic(self.folder / "metrics.csv", runs.metrics_csv(series))',
                '(self.folder / "metrics.csv").write_text(runs.metrics_csv(series))',
            ),
            Edit(
                P,
                'runs.write_atomic(folder / "metrics.csv", runs.metrics_csv(series))',
                '(folder / "metrics.csv").write_text(runs.metrics_csv(series))',
            ),
        ),
        (f"{KA}::test_run_replaces_metrics_csv_by_rename_every_time",),
    ),
    mutant(
        "runs.no-temp-cleanup",
        RU,
        "os.unlink(tmp)",
        "pass",
        "a failed or interrupted write leaves its temporary file",
        FAULTS_WRITE,
        f"{KA}::test_failed_write_keeps_the_previous_complete_metrics_file",
    ),
    mutant(
        "runs.numbers-rounded",
        RU,
        "return repr(float(value))",
        'return f"{float(value):.6g}"',
        "metrics written with 6 significant digits (no exact round trip)",
        GUARDS,
    ),
    mutant(
        "runs.diverged-flag-late",
        RU,
        "diverged = int(s.diverged_at is not None and step >= s.diverged_at)",
        "diverged = int(s.diverged_at is not None and step > s.diverged_at)",
        "metrics.csv flags divergence one logged step late",
        GUARDS,
        DIVERGENCE,
    ),
    mutant(
        "runs.read-last-diverged",
        RU,
        'if row["diverged"] == "1" and s.diverged_at is None:',
        'if row["diverged"] == "1":',
        "reading metrics.csv back takes the last flagged step as the divergence step",
        GUARDS,
        DIVERGENCE,
    ),
    mutant(
        "runs.folder-suffix-gap",
        RU,
        'folder = runs_dir / (base if k == 1 else f"{base}-{k}")',
        'folder = runs_dir / (base if k == 1 else f"{base}-{k + 1}")',
        "same-second run folders are numbered -3, -4... (a gap)",
        GUARDS,
    ),
    # ---- the expression parser
    mutant(
        "expr.bool-allowed",
        E,
        "if isinstance(value, bool):",
        "if False:",
        "True/False accepted as numbers",
        EXPR,
    ),
    mutant(
        "expr.chain-compares-to-first",
        E,
        "left = right",
        "pass",
        "a < b < c compares c with a instead of b",
        EXPR,
    ),
    mutant(
        "expr.and-or-swapped",
        E,
        "result = result.logical_and(other) if is_and else result.logical_or(other)",
        "result = result.logical_or(other) if is_and else result.logical_and(other)",
        "'and' and 'or' swapped",
        EXPR,
    ),
    mutant(
        "expr.mod-is-fmod",
        E,
        "ast.Mod: lambda a, b: a.remainder(b),",
        "ast.Mod: lambda a, b: a.fmod(b),",
        "% with C's sign (fmod) instead of Python's (remainder)",
        EXPR,
    ),
    mutant(
        "expr.attribute-call-allowed",
        E,
        "if not isinstance(func, ast.Name):",
        "if False:",
        "calls of non-names (x.exp()) pass the allow-list check",
        EXPR,
    ),
    mutant(
        "sweeps.loguniform-is-uniform",
        SW,
        "value = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)",
        "value = lo + (hi - lo) * u",
        "loguniform draws spread uniformly instead of per decade",
        SWEEP_PLAN,
    ),
    mutant(
        "sweeps.grid-zip-not-product",
        SW,
        "for combo in itertools.product(*(a.values for a in grids)):",
        "for combo in zip(*(a.values for a in grids)):",
        "grid axes paired element by element instead of every combination",
        SWEEP_PLAN,
        SWEEP,
    ),
    mutant(
        "sweeps.unseeded-draws",
        SW,
        "rng = random.Random(seed)",
        "rng = random.Random()",
        "random draws not reproducible from sweep_seed",
        SWEEP_PLAN,
    ),
    mutant(
        "tuned.argmax-not-argmin",
        TU,
        "return min(range(len(values)), key=order), criteria",
        "return max(range(len(values)), key=order), criteria",
        "each variant picks its worst value of the tuned key instead of its best",
        TUNED,
    ),
    mutant(
        "tuned.min-not-median",
        TUNING,
        "return float(statistics.median(cleaned)) if cleaned else math.inf",
        "return float(min(cleaned)) if cleaned else math.inf",
        "the criterion is the luckiest tuning seed instead of the median over them",
        TUNED,
    ),
    # ---- packing: points trained as one ensemble must equal the points alone
    mutant(
        "packing.point-lr-lost",
        PK,
        "lr = v.lr if v.lr is not None else cfg.train.lr",
        "lr = v.lr if v.lr is not None else configs[0].train.lr",
        "every point of a pack trains at the first point's train.lr",
        PACKING,
    ),
    mutant(
        "packing.shared-across-rates",
        PK,
        "identity = (key, settings, seed, lr)",
        "identity = (key, settings, seed)",
        "models that differ only in their learning rate are trained once and shared",
        PACKING,
    ),
    mutant(
        "packing.steps-per-model",
        PK,
        'PER_MODEL = ("name", "seeds", "variants", "train.lr")',
        'PER_MODEL = ("name", "seeds", "variants", "train.lr", "train.steps")',
        "points with different step counts are packed (and train for the first one's steps)",
        PACKING,
    ),
    mutant(
        "packing.rows-in-pack-order",
        PK,
        "[position[alias[(k, m.variant, m.seed)]] for m in members(cfg)]",
        "sorted(position[alias[(k, m.variant, m.seed)]] for m in members(cfg))",
        "a point's models split back in the pack's order, not the order the point alone has",
        PACKING,
    ),
    # ---- Ray executor: parallel tasks must not oversubscribe the cores
    mutant(
        "cluster.threads-leave-cores-idle",
        "aaf_cli/sweeps/cluster.py",
        "if sum(c // t for c in cpus) >= parallel:",
        "if sum(c // t for c in cpus) > parallel:",
        "a task gets fewer CPUs than the nodes have for it (one job on 2 cores: 1 thread)",
        "tests/test_ray.py::test_task_threads_fit_parallel_tasks_on_the_nodes",
    ),
    mutant(
        "cluster.threads-over-reservation",
        "aaf_cli/sweeps/cluster.py",
        "threads = max(1, min(int(requested), cpus))",
        "threads = max(1, int(requested))",
        "a config's thread count used beyond the CPUs its Ray task reserved (oversubscribed)",
        "tests/test_ray.py::test_task_threads_fit_parallel_tasks_on_the_nodes",
    ),
    mutant(
        "cluster.single-job-one-cpu",
        "aaf_cli/sweeps/cluster.py",
        "return task_threads(self.node_cpus, max(1, min(self.parallel, jobs)))",
        "return task_threads(self.node_cpus, max(1, self.parallel))",
        "a sweep of one job still reserves one CPU per parallel slot (a pack on 1 of 2 cores)",
        "tests/test_ray.py::test_a_single_job_gets_the_whole_node",
    ),
    mutant(
        "cluster.lost-task-one-retry-too-many",
        "aaf_cli/sweeps/cluster.py",
        "if tries > RETRIES:",
        "if tries > RETRIES + 1:",
        "a task Ray lost is submitted once more than the retries allow",
        "tests/test_ray.py::test_a_task_ray_loses_is_submitted_again_and_the_sweep_ends",
    ),
    mutant(
        "writing.fork-under-ray",
        "aaf_cli/sweeps/writing.py",
        'context = multiprocessing.get_context("forkserver")',
        'context = multiprocessing.get_context("fork")',
        "the driver of a Ray sweep forks itself (and Ray's gRPC threads) to write folders",
        "tests/test_ray.py::test_local_ray_equals_the_local_executor",
    ),
    # ---- the thread guard: drop a thread only when others crowd the run's cores
    mutant(
        "budget.guard-ignores-spare-cores",
        "aaf_cli/budget.py",
        "return others >= max(0, cores - threads) + BUSY_CORES",
        "return others >= BUSY_CORES",
        "any other process anywhere on a big machine makes a run drop its second thread",
        "tests/test_budget.py::test_crowded_rule",
        "tests/test_budget.py::test_thread_guard_counts_only_what_the_run_is_short_of",
    ),
    mutant(
        "budget.guard-counts-own-time",
        "aaf_cli/budget.py",
        "return max(0.0, (busy - own) / hz / seconds)",
        "return max(0.0, busy / hz / seconds)",
        "the run's own spinning threads count as other processes: every run drops a thread",
        "tests/test_budget.py::test_others_cores_subtracts_our_own_time",
        "tests/test_budget.py::test_thread_guard_drops_to_one_thread_on_sustained_contention",
    ),
    # ---- forward-mode (Taylor) derivatives: what train.compile traces for PDE runs
    mutant(
        "taylor.no-curvature",
        "aaf_cli/problems/pde/taylor.py",
        "curvature = d2 * zi * zj",
        "curvature = 0 * zi * zj",
        "second derivatives lose sigma''(z) z_i z_j: u_xx of a tanh network is wrong",
        f"{PDE}::test_forward_mode_derivatives_equal_reverse_mode",
        f"{PDE}::test_100_training_steps_equal_per_model_adam",
    ),
    mutant(
        "taylor.derivative-rows-collocation-only",
        PDE_RESIDUAL,
        "self.derivative_rows = self.points.shape[0] if needs else self.collocation.stop",
        "self.derivative_rows = self.collocation.stop",
        "a condition that prescribes u_t reads derivatives that forward mode never computed",
        f"{PDE}::test_forward_mode_pinn_loss_with_a_derivative_condition_equals_reverse_mode",
    ),
    mutant(
        "jets.tanh-curvature-sign",
        "aaf_cli/activations.py",
        "return h, d1, -2 * h * d1",
        "return h, d1, 2 * h * d1",
        "tanh's second derivative with the wrong sign",
        f"{PDE}::test_every_activation_jet_equals_autograd",
        f"{PDE}::test_forward_mode_derivatives_equal_reverse_mode",
    ),
    # ---- physics-informed (aaf_cli/problems/pde)
    mutant(
        "pde.shared-input",
        PDE_RESIDUAL,
        "    if base.dim() == 2:\n        base = base.expand(size, *base.shape)",
        "    if base.dim() == 3:\n        base = base[0]",
        "every model differentiated through ONE shared input: derivatives summed over models",
        f"{PDE}::test_batched_derivatives_equal_per_model_autograd",
        PDE,
    ),
    mutant(
        "pde.first-derivatives-without-graph",
        PDE_AUTODIFF,
        "create_graph=create_graph or len(prefix) + 1 < top,",
        "create_graph=create_graph,",
        "second derivatives of values-only calls (forcing from_exact) silently come out zero",
        f"{PDE}::test_klein_gordon_forcing_derived_from_the_exact_solution_equals_the_hand_derived_one",
        PDE,
    ),
    mutant(
        "pde.burgers-sign",
        PDE_REFERENCE,
        "parts.append(-(torch.sin(math.pi * y) * weight).sum(-1) / weight.sum(-1))",
        "parts.append((torch.sin(math.pi * y) * weight).sum(-1) / weight.sum(-1))",
        "the Cole-Hopf reference loses its minus sign (u(x, 0) = +sin(pi x))",
        f"{PDE}::test_burgers_reference_agrees_with_an_independent_spectral_solver",
        PDE,
    ),
    mutant(
        "train.objective-threshold-on-train",
        T,
        '    threshold = cfg.threshold if goal.threshold_on == "train" else -math.inf',
        "    threshold = cfg.threshold",
        "a PDE run counts steps to threshold on the PINN loss, every step, not on the relative "
        "L2 error at logged steps",
        f"{PDE_RUNS}::test_threshold_counts_on_the_relative_l2_error_at_logged_steps",
        PDE_RUNS,
    ),
    mutant(
        "train.objective-without-penalty",
        T,
        "        return metric, loss if penalty is None else loss + penalty, logged",
        "        return metric, loss, logged",
        "a PDE run drops slope recovery from what it minimises",
        f"{PDE_RUNS}::test_slope_recovery_is_minimised_with_the_pinn_loss",
        PDE_RUNS,
    ),
    # ---- sweeps: per-variant settings in packs, resume
    mutant(
        "sweeps.weight-decay-shared-in-pack",
        PK,
        'settings = json.dumps(v.model_dump(mode="json", exclude={"name"}), sort_keys=True)',
        'settings = json.dumps(v.model_dump(mode="json", exclude={"name", "weight_decay"}), '
        "sort_keys=True)",
        "points that differ only in a variant's weight decay share its models: every point "
        "gets the first point's decay",
        "tests/test_sweep_rules.py::test_a_variants_weight_decay_reaches_its_own_point_in_a_pack",
    ),
    mutant(
        "sweeps.weight-decay-shared-in-sweep-folders",
        PK,
        'settings = json.dumps(v.model_dump(mode="json", exclude={"name"}), sort_keys=True)',
        'settings = json.dumps(v.model_dump(mode="json", exclude={"name", "weight_decay"}), '
        "sort_keys=True)",
        "the same sharing seen through aaf sweep: a point's checkpoints are another point's",
        "tests/test_sweep_rules.py::test_a_weight_decay_sweep_writes_each_points_own_checkpoints",
    ),
    mutant(
        "sweeps.run-weight-decay-packed",
        PK,
        'PER_MODEL = ("name", "seeds", "variants", "train.lr")',
        'PER_MODEL = ("name", "seeds", "variants", "train.lr", "train.weight_decay")',
        "points that differ in train.weight_decay are packed and all train with the first "
        "point's decay",
        "tests/test_sweep_rules.py::"
        "test_points_that_differ_in_the_runs_weight_decay_train_apart_each_with_its_own",
    ),
    mutant(
        "sweeps.resume-nothing-pending-runs-all",
        PK,
        "todo = list(range(len(configs))) if pending is None else list(pending)",
        "todo = list(pending or range(len(configs)))",
        "no pending point (a finished sweep resumed) is read as 'every point': all retrained",
        "tests/test_sweep_rules.py::"
        "test_resume_of_a_finished_sweep_trains_nothing_and_touches_no_point",
    ),
    mutant(
        "sweeps.resume-tuned-retrains-tuning-points",
        "aaf_cli/sweeps/local.py",
        "e.index for e in record.points if records.point_status(folder / e.folder) not in DONE",
        "e.index for e in record.points\n        if plan.protocol is not None or "
        "records.point_status(folder / e.folder) not in DONE",
        "resuming a tuned sweep trains its finished tuning points again",
        "tests/test_sweep_rules.py::"
        "test_resume_of_a_tuned_sweep_remakes_only_its_missing_evaluation_run",
    ),
    mutant(
        "sweeps.resume-retrains-diverged",
        "aaf_cli/sweeps/local.py",
        "if records.point_status(folder / e.folder) not in DONE",
        'if records.point_status(folder / e.folder) != "completed"',
        "a diverged point (a finished result) is trained again by every resume",
        "tests/test_sweep_rules.py::test_a_diverged_point_is_done_and_resume_leaves_it",
    ),
    mutant(
        "sweeps.points-geomean-counts-diverged",
        "aaf_cli/sweeps/records.py",
        'kept = [o for o in v.get("per_seed", []) if o.get("diverged_at") is None]',
        'kept = list(v.get("per_seed", []))',
        "points.csv's geometric means and t intervals include the values of diverged seeds "
        "(a best-so-far value is finite: reached before the seed diverged)",
        "tests/test_sweep_rules.py::"
        "test_points_csv_geomeans_and_intervals_are_over_the_non_diverged_seeds",
    ),
    mutant(
        "sweeps.points-p-unadjusted",
        "aaf_cli/sweeps/records.py",
        'row["p"] = _stat(reported_p(c))',
        'row["p"] = _stat(c.get("p_value"))',
        "points.csv's p is the raw Wilcoxon p, not Holm-adjusted over the point's variants",
        "tests/test_sweep_rules.py::test_points_csv_p_is_holm_adjusted_over_the_points_variants",
    ),
    # ---- physics-informed references and their parameters; schedules; weight decay on slopes
    mutant(
        "pde.params-reference-ignores-its-params",
        PDE_REFERENCE,
        'nu = float(params["nu"])',
        "nu = 0.01 / math.pi",
        "the Burgers reference is computed at the default nu whatever reference.params says",
        "tests/test_pde_reference_params.py::"
        "test_burgers_reference_with_given_nu_solves_the_equation_at_that_nu_not_the_default",
        "tests/test_pde_reference_params.py::"
        "test_test_grid_and_value_free_conditions_use_the_reference_at_the_given_nu",
    ),
    mutant(
        "pde.params-reference-defaults-win",
        "aaf_cli/problems/pde/spec.py",
        "return {**REFERENCES[self.name].params, **self.params}",
        "return {**self.params, **REFERENCES[self.name].params}",
        "the reference's defaults override the parameters given in reference.params",
        "tests/test_pde_reference_params.py::"
        "test_burgers_reference_with_given_nu_solves_the_equation_at_that_nu_not_the_default",
        "tests/test_pde_reference_params.py::"
        "test_inverse_burgers_data_and_true_value_come_from_the_given_reference_parameter",
    ),
    mutant(
        "pde.params-true-from-default-reference",
        "aaf_cli/problems/pde/spec.py",
        "        ref = self.reference.resolved() if self.reference is not None else {}\n"
        "        out: dict[str, float | None] = {}",
        "        ref = REFERENCES[self.reference.name].params if self.reference else {}\n"
        "        out: dict[str, float | None] = {}",
        "a trainable parameter's true value is the reference's default, not reference.params'",
        "tests/test_pde_reference_params.py::"
        "test_inverse_burgers_data_and_true_value_come_from_the_given_reference_parameter",
    ),
    mutant(
        "pde.params-true-ignored",
        "aaf_cli/problems/pde/spec.py",
        "out[k] = v.true if v.true is not None else ref.get(k)",
        "out[k] = ref.get(k)",
        "a trainable parameter's `true` is ignored (unknown unless the reference knows it)",
        "tests/test_pde_reference_params.py::"
        "test_inverse_problem_makes_forcing_conditions_data_and_test_values_at_the_true_value",
    ),
    mutant(
        "pde.params-solution-at-init",
        "aaf_cli/problems/pde/spec.py",
        "out.update({k: v for k, v in self.true_params().items() if v is not None})",
        "out.update(self.trainable_params())",
        "the exact solution, forcing and condition values see a trainable parameter's starting "
        "value instead of its true value",
        "tests/test_pde_reference_params.py::"
        "test_inverse_problem_makes_forcing_conditions_data_and_test_values_at_the_true_value",
    ),
    mutant(
        "pde.params-condition-values-at-init",
        "aaf_cli/problems/pde/problem.py",
        "    params = pde.solution_params()\n    conditions = []",
        "    params = {**pde.fixed_params(), **pde.trainable_params()}\n    conditions = []",
        "a condition's written value is evaluated at the trainable parameters' starting values",
        "tests/test_pde_reference_params.py::"
        "test_inverse_problem_makes_forcing_conditions_data_and_test_values_at_the_true_value",
    ),
    mutant(
        "pde.params-exact-at-init",
        "aaf_cli/problems/pde/problem.py",
        "        params = pde.solution_params()\n        names = pde.input_names",
        "        params = {**pde.fixed_params(), **pde.trainable_params()}\n"
        "        names = pde.input_names",
        "the exact solution (data, test grid, value-free conditions, derived forcing) is made "
        "at the trainable parameters' starting values",
        "tests/test_pde_reference_params.py::"
        "test_inverse_problem_makes_forcing_conditions_data_and_test_values_at_the_true_value",
    ),
    mutant(
        "pde.params-data-from-default-reference",
        "aaf_cli/problems/pde/problem.py",
        "            clean = solution(data_points)",
        "            from aaf_cli.problems.pde.reference import burgers as _at_default\n\n"
        "            clean = (\n"
        "                solution(data_points)\n"
        "                if pde.reference is None\n"
        "                else _at_default(data_points[:, 0], data_points[:, 1])\n"
        "            )",
        "observations are drawn from the reference at its default parameters",
        "tests/test_pde_reference_params.py::"
        "test_inverse_burgers_data_and_true_value_come_from_the_given_reference_parameter",
    ),
    mutant(
        "pde.params-residual-check-at-init",
        "aaf_cli/problems/pde/problem.py",
        "**{k: v for k, v in self.true_params.items() if v is not None},",
        "**self.trainable_params,",
        "a solution is checked against the operator at the trainable parameters' starting "
        "values instead of their true values",
        "tests/test_pde_reference_params.py::"
        "test_inverse_burgers_data_and_true_value_come_from_the_given_reference_parameter",
    ),
    mutant(
        "pde.params-reference-disagreement-accepted",
        "aaf_cli/problems/pde/spec.py",
        "if value is None or math.isclose(value, ref[key], rel_tol=1e-9, abs_tol=0.0):",
        "if True:",
        "a fixed nu (or a true nu) that differs from the reference's is accepted silently",
        "tests/test_pde_reference_params.py::"
        "test_a_parameter_that_contradicts_the_reference_is_refused",
    ),
    mutant(
        "pde.params-coefficients-decayed",
        PDE_RESIDUAL,
        "decays += [None] * len(extra)",
        "decays += [torch.full((p.shape[0],), cfg.weight_decay, dtype=p.dtype) "
        "for p, _, _ in extra]",
        "an inverse problem's coefficients (nu) are weight-decayed like the network's weights",
        "tests/test_schedule_decay_rules.py::"
        "test_inverse_problem_coefficients_are_not_decayed_even_with_activation_decay",
    ),
    mutant(
        "train.schedule-rule-exponential-ignores-warmup",
        T,
        'return params["gamma"] ** t',
        'return params["gamma"] ** step',
        "the exponential schedule counts its steps from 0, not from the end of the warmup",
        "tests/test_schedule_decay_rules.py::"
        "test_exponential_schedule_counts_its_steps_from_the_end_of_the_warmup",
        "tests/test_schedule_decay_rules.py::"
        "test_rates_equal_torch_schedulers_chained_after_a_linear_warmup",
    ),
    mutant(
        "train.schedule-rule-step-without-default-gamma",
        T,
        'return params["gamma"] ** (t // int(params["step_size"]))  # step',
        'return (cfg.gamma or 1.0) ** (t // int(params["step_size"]))  # step',
        "the step schedule does not decay when gamma is left at its default (0.1)",
        "tests/test_schedule_decay_rules.py::"
        "test_step_schedule_decays_by_gamma_every_step_size_updates_after_the_warmup",
        "tests/test_schedule_decay_rules.py::"
        "test_rates_equal_torch_schedulers_chained_after_a_linear_warmup",
    ),
    mutant(
        "train.schedule-rule-cosine-floor-at-last-update",
        T,
        "math.cos(math.pi * t / (cfg.steps - warmup))",
        "math.cos(math.pi * t / (cfg.steps - warmup - 1))",
        "the cosine schedule reaches its floor at the last update instead of after it",
        "tests/test_schedule_decay_rules.py::"
        "test_cosine_schedule_known_values_with_floor_and_warmup",
    ),
    mutant(
        "train.schedule-rule-cosine-floor-ignored",
        T,
        'floor = params.get("min_lr_factor", 0.0)',
        "floor = 0.0",
        "the cosine schedule ignores min_lr_factor (decays to 0)",
        "tests/test_schedule_decay_rules.py::"
        "test_cosine_schedule_known_values_with_floor_and_warmup",
    ),
    mutant(
        "train.schedule-rule-warmup-from-one-step",
        T,
        "return step / warmup",
        "return (step + 1) / warmup",
        "the warmup starts at lr/W instead of 0",
        "tests/test_schedule_decay_rules.py::"
        "test_warmup_rises_linearly_from_zero_then_hands_over_to_the_schedule",
    ),
    mutant(
        "train.decay-rule-adamw-without-rate",
        T,
        "self.flat.mul_(1 - rate * self.decay)",
        "self.flat.mul_(1 - factor * self.decay)",
        "AdamW's decay w *= 1 - factor*d, not scaled by each row's rate (a rate-0 row decays)",
        "tests/test_schedule_decay_rules.py::"
        "test_schedule_scales_each_models_own_rate_and_leaves_a_rate_0_row_frozen",
        "tests/test_schedule_decay_rules.py::test_one_adamw_step_by_the_formula",
    ),
    mutant(
        "train.decay-rule-adamw-after-the-update",
        T,
        "        if self.decay is not None:\n"
        "            self.flat.mul_(1 - rate * self.decay)\n"
        "        self.m.lerp_(grad, 1 - beta1)\n"
        "        self.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)\n"
        "        denom = (self.v.sqrt() / bias2_sqrt).add_(self.eps)\n"
        "        self.flat.sub_(self.m / denom * (rate / bias1))\n",
        "        self.m.lerp_(grad, 1 - beta1)\n"
        "        self.v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)\n"
        "        denom = (self.v.sqrt() / bias2_sqrt).add_(self.eps)\n"
        "        self.flat.sub_(self.m / denom * (rate / bias1))\n"
        "        if self.decay is not None:\n"
        "            self.flat.mul_(1 - rate * self.decay)\n",
        "AdamW's decay applied after the Adam update instead of before it",
        "tests/test_schedule_decay_rules.py::test_one_adamw_step_by_the_formula",
    ),
    mutant(
        "train.decay-rule-sgd-decoupled",
        T,
        "        masked = self._masked(active, factor, all_active, l2=True, flat_grad=flat_grad)\n"
        "        if masked is None:\n"
        "            return\n"
        "        grad, rate = masked\n",
        "        masked = self._masked(active, factor, all_active, l2=False, flat_grad=flat_grad)\n"
        "        if masked is None:\n"
        "            return\n"
        "        grad, rate = masked\n"
        "        if self.decay is not None:\n"
        "            self.flat.mul_(1 - rate * self.decay)\n",
        "SGD's weight decay decoupled (w *= 1 - lr d) instead of the L2 term before the momentum",
        "tests/test_schedule_decay_rules.py::"
        "test_weight_decay_hits_exactly_the_parameters_the_rules_name",
    ),
    mutant(
        "train.decay-rule-flag-decays-slopes-only",
        T,
        "decayed = id(p) in dense or cfg.decay_activation_params",
        "decayed = id(p) in dense or (cfg.decay_activation_params and p.dim() == 3)",
        "decay_activation_params decays the slopes but not Rowdy's or the rational unit's "
        "coefficients",
        "tests/test_schedule_decay_rules.py::"
        "test_weight_decay_hits_exactly_the_parameters_the_rules_name",
    ),
    mutant(
        "train.decay-rule-coefficients-by-default",
        T,
        "decayed = id(p) in dense or cfg.decay_activation_params",
        "decayed = id(p) in dense or cfg.decay_activation_params or p.dim() == 4",
        "Rowdy's and the rational unit's coefficients are decayed without decay_activation_params",
        "tests/test_schedule_decay_rules.py::"
        "test_weight_decay_hits_exactly_the_parameters_the_rules_name",
    ),
    mutant(
        "train.decay-rule-variant-zero-falls-back",
        T,
        "        cfg.weight_decay\n"
        "        if m.spec is None or m.spec.weight_decay is None\n"
        "        else float(m.spec.weight_decay)\n",
        "        float(m.spec.weight_decay or cfg.weight_decay)\n"
        "        if m.spec is not None\n"
        "        else cfg.weight_decay\n",
        "a variant's weight_decay 0 falls back to train.weight_decay",
        "tests/test_schedule_decay_rules.py::"
        "test_weight_decay_hits_exactly_the_parameters_the_rules_name",
    ),
    mutant(
        "train.decay-rule-group-takes-first-variant",
        T,
        "rows = per_model[start : start + p.shape[0]]",
        "rows = per_model[start : start + 1] * p.shape[0]",
        "every model of a group takes the decay of the group's first variant",
        "tests/test_schedule_decay_rules.py::"
        "test_weight_decay_hits_exactly_the_parameters_the_rules_name",
    ),
    # ---- the compiled step and the thread guard
    mutant(
        "train.last-step-measured-eagerly",
        T,
        "out = self.device_step.replay() if update else self.device_step.peek()",
        "out = self.device_step.replay() if update else None",
        "a compiled run's last logged loss comes from an eager evaluation (it rounds apart from "
        "the compiled kernels: a frozen row's loss jumps by an ulp on CPUs without AVX-512)",
        "tests/test_engine_fast.py::"
        "test_compiled_step_equals_eager_with_schedule_decay_recovery_and_a_frozen_row",
    ),
    mutant(
        "train.peek-keeps-the-update",
        T,
        "            for t, s in zip(self.optimizer_state, saved):\n                t.copy_(s)",
        "            for t, s in zip(self.optimizer_state, saved[:0]):\n                t.copy_(s)",
        "the compiled last step's measurement also updates the parameters (one step too many)",
        "tests/test_engine_fast.py::test_compiled_step_equals_the_reference_and_eager_in_float64",
    ),
    mutant(
        "train.compiles-an-ungraded-loss",
        T,
        "if compiling and ungraded(losses, optimizer.params):",
        "if compiling and False:",
        "a loss that leaves a trained tensor without a gradient is compiled anyway: the compiled "
        "step hands it a zero gradient and weight decay moves it, where eager mode freezes it",
        "tests/test_engine_rules.py::"
        "test_a_loss_that_leaves_a_parameter_without_a_gradient_is_not_compiled",
    ),
    mutant(
        "train.tables-not-power-of-two",
        T,
        "size = 1 << (max(cfg.steps, 1) + pad - 1).bit_length()",
        "size = max(cfg.steps, 1) + pad",
        "the device-side schedule tables are as long as the run: every run length compiles the "
        "step again",
        "tests/test_engine_rules.py::test_runs_of_other_lengths_reuse_the_compiled_step",
    ),
    mutant(
        "train.compiled-threshold-on-penalised-loss",
        T,
        "book.update(index, data, loss, limit)",
        "book.update(index, loss, loss, limit)",
        "the compiled step counts steps to threshold on the minimised loss (slope-recovery "
        "penalty included), not on the training data loss",
        "tests/test_engine_rules.py::test_the_compiled_step_counts_the_threshold_on_the_data_loss",
    ),
    mutant(
        "train.warmup-index-not-reset",
        T,
        "                self.schedule.index.fill_(at)\n",
        "",
        "the warm-up steps of a device-side step are undone but not its step counter: training "
        "starts with the schedule factor and bias corrections of step 3",
        "tests/test_engine_fast.py::test_the_device_side_step_matches_the_eager_step",
        "tests/test_engine_rules.py::test_runs_of_other_lengths_reuse_the_compiled_step",
    ),
    mutant(
        "train.device-factor-off-by-one",
        T,
        "self.factors = table([lr_factor(cfg, s) for s in range(cfg.steps)] or [0.0])",
        "self.factors = table([lr_factor(cfg, s + 1) for s in range(cfg.steps)] or [0.0])",
        "the device-side step takes the schedule factor of the next step (warmup and cosine "
        "shifted by one)",
        "tests/test_engine_fast.py::test_the_device_side_step_matches_the_eager_step",
        "tests/test_engine_rules.py::test_the_compiled_step_counts_the_threshold_on_the_data_loss",
    ),
    mutant(
        "budget.guard-samples-every-poll",
        "aaf_cli/budget.py",
        "if now - self.last[0] < self.interval:",
        "if now - self.last[0] < 0:",
        "the thread guard reads /proc at every step, not twice a second: a burst of other work "
        "a fraction of a second long makes the run drop its second thread",
        "tests/test_engine_rules.py::"
        "test_the_guard_samples_twice_a_second_and_needs_two_samples_in_a_row",
    ),
    mutant(
        "budget.guard-one-strike",
        "aaf_cli/budget.py",
        "if self.strikes >= GUARD_STRIKES:",
        "if self.strikes >= 1:",
        "one crowded sample (a blip) makes the run drop to one thread, not two in a row",
        "tests/test_budget.py::test_thread_guard_drops_to_one_thread_on_sustained_contention",
        "tests/test_engine_rules.py::"
        "test_the_guard_samples_twice_a_second_and_needs_two_samples_in_a_row",
    ),
    mutant(
        "budget.free-cores-whole-host",
        "aaf_cli/budget.py",
        "for cpu in allowed & before.keys() & after.keys():",
        "for cpu in before.keys() & after.keys():",
        "free cores counted over every CPU of the host, not those the process may run on",
        "tests/test_engine_rules.py::"
        "test_free_cores_is_the_idle_time_of_the_allowed_cpus_over_the_window",
    ),
    mutant(
        "budget.free-cores-since-boot",
        "aaf_cli/budget.py",
        "idle += (after[cpu][0] - before[cpu][0]) / total",
        "idle += after[cpu][0] / after[cpu][1]",
        "free cores from the idle share since boot instead of over the 0.1 s window: a process "
        "that just started is not seen",
        "tests/test_engine_rules.py::"
        "test_free_cores_is_the_idle_time_of_the_allowed_cpus_over_the_window",
    ),
    mutant(
        "budget.idle-without-iowait",
        "aaf_cli/budget.py",
        "out[name[3:]] = (ticks[3] + ticks[4], sum(ticks))",
        "out[name[3:]] = (ticks[3], sum(ticks))",
        "a CPU waiting on I/O counts as busy: free cores undercounted",
        "tests/test_engine_rules.py::"
        "test_free_cores_is_the_idle_time_of_the_allowed_cpus_over_the_window",
    ),
    mutant(
        "budget.quota-ignored",
        "aaf_cli/budget.py",
        'if quota != "max":',
        "if False:",
        "a cgroup CPU quota does not cap the usable cores: the guard runs in a container whose "
        "/proc/stat counts the whole host",
        "tests/test_engine_rules.py::test_a_cpu_quota_caps_the_cores_and_keeps_the_guard_idle",
    ),
    mutant(
        "budget.own-time-user-only",
        "aaf_cli/budget.py",
        "return int(fields[11]) + int(fields[12])",
        "return int(fields[11])",
        "the run's own CPU time without its system time: that time counts as other processes'",
        "tests/test_engine_rules.py::test_the_runs_own_cpu_time_is_user_plus_system_time",
    ),
    # ---- tuning inside a run, verdict words, one statistic across seeds
    mutant(
        "tuning.phase-sees-test",
        TUNING,
        "found = [choose(c, r) for c, r in zip(configs, trainer(phase, False, on_tuning_log))]",
        "found = [choose(c, r) for c, r in zip(configs, trainer(phase, True, on_tuning_log))]",
        "the tuning phase is given the test data (a choice could read it)",
        f"{TUNING_TESTS}::test_no_test_number_enters_the_choice",
    ),
    mutant(
        "tuning.choice-reads-test",
        TUNING,
        "(math.inf if o.diverged else o.final_val) for o in outcomes",
        "(math.inf if o.diverged else o.final_test) for o in outcomes",
        "each variant's rate is chosen by a test number, not the validation loss",
        f"{TUNING_TESTS}::test_each_variant_takes_the_rate_of_least_median_final_validation_loss",
    ),
    mutant(
        "tuning.argmax",
        TUNING,
        "best = min(range(len(grid)), key=lambda i: (criteria[i], grid[i]))",
        "best = max(range(len(grid)), key=lambda i: (criteria[i], grid[i]))",
        "each variant takes its worst rate",
        f"{TUNING_TESTS}::test_each_variant_takes_the_rate_of_least_median_final_validation_loss",
    ),
    mutant(
        "tuning.seeds-overlap",
        "aaf_cli/config.py",
        "            if seed not in used:",
        "            if True:",
        "tuning seeds may be the run's own seeds (the choice's luck enters the verdict)",
        f"{TUNING_TESTS}::test_tuning_seeds_are_never_the_runs_own",
    ),
    mutant(
        "tuning.evaluation-ignores-choice",
        TUNING,
        'variants = [v.model_copy(update={"lr": chosen[v.name]}) for v in cfg.variants]',
        "variants = list(cfg.variants)",
        "the comparison trains at the configured rates, not the chosen ones",
        f"{TUNING_TESTS}::test_the_comparison_is_an_ordinary_run_at_the_chosen_rates",
    ),
    mutant(
        "tuning.validation-on-test-grid",
        "aaf_cli/problems/expression.py",
        'return self._sampled(self.target.n_val, "random", validation_seed(self.target))',
        'return self._sampled(self.target.n_val, "grid", validation_seed(self.target))',
        "validation points on a grid like the test points, not drawn apart from their own seed",
        f"{TUNING_TESTS}::test_validation_points_are_their_own",
    ),
    mutant(
        "train.validation-is-test",
        T,
        "        return test, val, model.recovery(), {**model.trajectories(), **values}",
        "        return test, test, model.recovery(), {**model.trajectories(), **values}",
        "the logged validation loss is the test loss",
        f"{TUNING_TESTS}::test_no_test_number_enters_the_choice",
    ),
    mutant(
        "train.compile-shares-one-code",
        T,
        "    code = _CODES.setdefault(key, fn.__code__.replace())",
        "    code = fn.__code__",
        "every compiled run of a process shares one code object: the ninth structure hits "
        "Dynamo's recompile limit and trains eagerly",
        "tests/test_engine_rules.py::"
        "test_compiling_many_structures_in_one_process_never_hits_the_recompile_limit",
    ),
    mutant(
        "data.scaling-on-every-row",
        "aaf_cli/problems/data.py",
        "                self.table.x[train],\n                self.table.y[train],",
        "                self.table.x,\n                self.table.y,",
        "a data file's standardisation fitted on every row, the validation and test rows included",
        f"{DATA_TESTS}::test_dataset_validation_rows_are_the_split_validation_rows_standardized",
    ),
    mutant(
        "data.validation-is-test",
        "aaf_cli/problems/data.py",
        "parts = (self.split.train, self.split.test, self.split.validation)",
        "parts = (self.split.train, self.split.test, self.split.test)",
        "a data file's validation rows are its test rows: the tuning reads the verdict's data",
        f"{DATA_TESTS}::test_tuning_reads_the_validation_rows_and_never_the_test_rows",
    ),
    mutant(
        "stats.wins-on-a-tie",
        S,
        "    if wins > losses:",
        "    if wins >= losses:",
        "a variant even with the baseline is said to win",
        f"{VERDICTS}::test_zero_of_three_is_a_loss_never_a_win",
    ),
    mutant(
        "stats.neither-count-off",
        S,
        "    neither = c.pairs - c.reached_both - c.reached_only_variant - c.reached_only_baseline",
        "    neither = c.pairs - c.reached_only_variant - c.reached_only_baseline",
        "the seeds where neither reached the threshold counted with those where both did",
        f"{VERDICTS}::test_every_threshold_count_and_the_pairs_behind_a_speed_up",
    ),
    mutant(
        "stats.split-by-the-gap-alone",
        S,
        "    if gaps[k] < SPLIT_DECADES or gaps[k] < width:",
        "    if gaps[k] < SPLIT_DECADES:",
        "one wide spread of seeds is reported as two groups",
        f"{VERDICTS}::test_seeds_that_stay_on_the_plateau_are_counted_where_outcomes_split",
    ),
    mutant(
        "stats.plateau-any-upper-seed",
        S,
        "if math.isfinite(i) and t > i / PLATEAU_DROP)",
        "if math.isfinite(i))",
        "seeds that trained but stalled are said to have stayed on the initial plateau",
        f"{VERDICTS}::test_seeds_that_stay_on_the_plateau_are_counted_where_outcomes_split",
    ),
    mutant(
        "results.center-median",
        R,
        'med.append(geometric_mean(values) if center == "geomean" else quantile(values, 0.5))',
        "med.append(quantile(values, 0.5))",
        "the figure's line is the median while the table and verdict use the geometric mean",
        f"{VERDICTS}::test_the_table_the_figure_data_and_the_verdict_use_one_statistic",
    ),
    # ---- statistics rules the documentation states
    mutant(
        "stats.tail-nan-only-if-all",
        S,
        "if not all(math.isfinite(v) for v in tail):",
        "if not any(math.isfinite(v) for v in tail):",
        "a model non-finite in part of its tail still gets a final value (the median of what "
        "sorts into the middle)",
        "tests/test_stats_rules.py::test_a_tail_with_any_non_finite_point_has_no_final_value",
    ),
    mutant(
        "stats.tail-skips-nonfinite",
        S,
        "    if not all(math.isfinite(v) for v in tail):\n        return math.nan\n",
        "    tail = [v for v in tail if math.isfinite(v)] or [math.nan]\n",
        "the final value of a model that blew up in its tail is the median of its finite points",
        "tests/test_stats_honest.py::test_tail_value_is_the_median_of_the_last_five_percent",
        "tests/test_stats_rules.py::test_a_tail_with_any_non_finite_point_has_no_final_value",
    ),
    mutant(
        "stats.comparison-bootstrap-interval",
        S,
        "lo, hi, method = mean_ci(usable)",
        'lo, hi, method = (*bootstrap_mean_ci(usable), "t")',
        "the ratio's interval from the percentile bootstrap (too narrow at few seeds), still "
        "labelled t",
        "tests/test_stats_rules.py::test_the_ratio_interval_is_student_t_on_the_log_ratios",
    ),
    mutant(
        "stats.t-interval-df-n",
        S,
        "t_quantile(1 - (1 - level) / 2, n - 1)",
        "t_quantile(1 - (1 - level) / 2, n)",
        "the t interval with n degrees of freedom instead of n - 1 (too narrow at few seeds)",
        "tests/test_stats_honest.py::test_t_interval_by_hand",
        "tests/test_stats_rules.py::test_the_ratio_interval_is_student_t_on_the_log_ratios",
    ),
    mutant(
        "stats.wilcoxon-exact-ties-rounded",
        S,
        "doubled = [round(2 * rank) for rank in r]",
        "doubled = [2 * round(rank) for rank in r]",
        "the exact test rounds tied mid-ranks (1.5 -> 2) instead of counting over them",
        "tests/test_stats_rules.py::test_exact_wilcoxon_over_mid_ranks_by_hand",
    ),
    mutant(
        "stats.wilcoxon-p-above-one",
        S,
        "return w_plus, min(1.0, 2 * lower / 2**n)",
        "return w_plus, 2 * lower / 2**n",
        "a two-sided exact p above 1 at the centre of the distribution",
        "tests/test_stats_rules.py::test_a_two_sided_p_is_never_above_one",
    ),
    mutant(
        "stats.wilcoxon-exact-below-30",
        S,
        "if n <= EXACT_WILCOXON_MAX_N:",
        "if n < EXACT_WILCOXON_MAX_N:",
        "30 pairs get the normal approximation, not the exact test",
        "tests/test_stats_rules.py::test_the_test_is_exact_up_to_30_pairs_and_normal_above",
    ),
    mutant(
        "stats.holm-bonferroni",
        S,
        "min(1.0, (m - rank) * p)",
        "min(1.0, m * p)",
        "every p multiplied by the family size (Bonferroni), not Holm's step-down",
        "tests/test_stats_honest.py::test_holm_by_hand",
        "tests/test_stats_rules.py::test_holm_over_the_variants_of_a_run_by_hand",
    ),
    mutant(
        "stats.reported-p-raw",
        S,
        'return comparison.get("p_holm") if family > 1 else comparison.get("p_value")',
        'return comparison.get("p_value")',
        "tables show the unadjusted p of a comparison with several variants",
        "tests/test_stats_rules.py::test_holm_over_the_variants_of_a_run_by_hand",
    ),
    mutant(
        "stats.p-reported-raw",
        S,
        "return self.p_holm if self.family > 1 else self.p_value",
        "return self.p_value",
        "a verdict with several variants rests on the unadjusted p",
        "tests/test_stats_rules.py::test_holm_over_the_variants_of_a_run_by_hand",
    ),
    mutant(
        "stats.seeds-floor-ignores-family",
        S,
        "while min_wilcoxon_p(floor) > level:",
        "while min_wilcoxon_p(floor) > alpha:",
        "the suggested seed count's floor is what the exact test needs at 5%, not at the "
        "family's level 5%/comparisons",
        "tests/test_stats_rules.py::"
        "test_the_seed_count_never_falls_below_what_the_exact_test_needs",
    ),
    mutant(
        "stats.seeds-needed-ignores-family",
        S,
        "seeds_needed=seeds_needed(usable, family),",
        "seeds_needed=seeds_needed(usable),",
        "the suggested seed count is for one comparison when several variants are compared",
        "tests/test_stats_rules.py::test_the_seed_count_is_for_the_level_of_the_family",
    ),
    mutant(
        "results.seeds-family-one",
        R,
        "compare_paired(a, b, finals(a), finals(b), steps(a), steps(b), len(pairs))",
        "compare_paired(a, b, finals(a), finals(b), steps(a), steps(b), 1)",
        "a run's comparisons suggest seed counts as if each were the only one",
        "tests/test_stats_rules.py::test_the_seed_count_is_for_the_level_of_the_family",
    ),
    mutant(
        "stats.min-p-counts-ties",
        S,
        "min_p=min_wilcoxon_p(nonzero),",
        "min_p=min_wilcoxon_p(len(seeds)),",
        "the floor of p counts pairs that tie (which the test drops): it claims more than the "
        "test can show",
        "tests/test_stats_rules.py::test_the_floor_of_p_counts_only_the_pairs_that_differ",
    ),
    mutant(
        "results.pairs-keep-diverged",
        R,
        "return {o.seed: of(o) for o in groups[name] if not o.diverged}",
        "return {o.seed: of(o) for o in groups[name]}",
        "seeds where either side diverged still count as pairs",
        "tests/test_stats_rules.py::test_pairs_leave_out_seeds_where_either_side_diverged",
    ),
    mutant(
        "results.median-seed-by-best",
        R,
        "        key=lambda o: o.final_test,\n",
        "        key=lambda o: o.best_test,\n",
        "the median seed is chosen by the best logged test loss, not the final one",
        "tests/test_stats_rules.py::test_the_median_seed_is_the_median_of_the_final_test_loss",
    ),
    # ---- KAN and spline activations, equal size, the sceptic's control
    mutant(
        "splines.right-factor",
        "aaf_cli/splines.py",
        "b = left[..., :-1, :] * b[..., :-1, :] + (1 - left[..., 1:, :]) * b[..., 1:, :]",
        "b = left[..., :-1, :] * b[..., :-1, :] + (1 - left[..., :-1, :]) * b[..., 1:, :]",
        "the batched KAN's B-spline recursion takes the wrong knot for the right factor",
        "tests/test_kan.py::test_kan_training_equals_per_model_adam",
    ),
    mutant(
        "kan.grid-update-uniform",
        "aaf_cli/kan.py",
        "points = GRID_EPS * uniform + (1 - GRID_EPS) * adaptive",
        "points = (1 - GRID_EPS) * uniform + GRID_EPS * adaptive",
        "a grid update puts the grid mostly uniform, not at the samples' quantiles (pykan's)",
        "tests/test_kan.py::test_update_grid_equals_the_per_edge_least_squares_refit",
    ),
    mutant(
        "sizing.tolerance-ignored",
        "aaf_cli/sizing.py",
        "return at(best), count, abs(count - target) <= TOLERANCE * target",
        "return at(best), count, True",
        "match accepts any width, however far from the baseline's size",
        "tests/test_sizing.py::test_an_infeasible_match_is_refused_naming_the_key_and_the_nearest_width",
    ),
    mutant(
        "controls.mean-not-median",
        "aaf_cli/controls.py",
        "s = statistics.median(finite)",
        "s = statistics.fmean(finite)",
        "the control's steepness is the mean of the seeds' final n*a, not their median",
        "tests/test_controls.py::test_control_slope_is_the_median_of_the_sources_final_steepness",
    ),
)


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, stale, error
    detail: str
    seconds: float


def select_tests(m: Mutant, ignore_new: bool) -> list[str]:
    tests = list(m.tests)
    if ignore_new:
        tests = [t for t in tests if t not in NEW_TESTS and t.split("::")[0] not in NEW_TESTS]
    return tests


def stale_edits(m: Mutant, root: Path = ROOT) -> list[str]:
    """Why each edit of ``m`` cannot be applied to ``root`` (empty: it can)."""
    problems = []
    for edit in m.edits:
        path = root / edit.file
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        count = text.count(edit.original)
        if count != 1:
            problems.append(f"{edit.file}: {edit.original!r} found {count} times")
        if edit.original == edit.replacement:
            problems.append(f"{edit.file}: replacement equals the original")
    return problems


def copy_tree(dest: Path) -> Path:
    target = dest / "repo"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    return target


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy)  # before the editable install's finder
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no bytecode cache to outlive a mutation
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("PYTEST_ADDOPTS", None)
    return env


# Imports the package from the copy or refuses to run (the venv holds an editable install of
# the working tree, which must not be what the tests exercise).
BOOTSTRAP = (
    "import sys, pathlib, aaf_cli; "
    "where = pathlib.Path(aaf_cli.__file__).resolve(); "
    "copy = pathlib.Path(sys.argv[1]).resolve(); "
    "sys.exit(f'aaf_cli imported from {where}, not from the copy {copy}') "
    "if copy not in where.parents else None; "
    "import pytest; sys.exit(pytest.main(sys.argv[2:]))"
)


def run_pytest(copy: Path, tests: Sequence[str], timeout: float) -> tuple[int | None, str]:
    command = [
        sys.executable,
        "-c",
        BOOTSTRAP,
        str(copy),
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=-ra",
        *tests,
    ]
    try:
        proc = subprocess.run(
            command,
            cwd=copy,
            env=environment(copy),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, "timeout"
    return proc.returncode, proc.stdout + proc.stderr


FAILED = re.compile(r"^(FAILED|ERROR) (.+?)(?: - .*)?$", re.MULTILINE)


def first_failure(output: str) -> str:
    match = FAILED.search(output)
    if match:
        return match.group(2)
    tail = [line for line in output.strip().splitlines() if line.strip()]
    return tail[-1] if tail else "(no output)"


def check(m: Mutant, copy: Path, ignore_new: bool, timeout: float) -> Outcome:
    start = time.monotonic()
    problems = stale_edits(m, copy)
    if problems:
        return Outcome(m, "stale", "; ".join(problems), 0.0)
    tests = select_tests(m, ignore_new)
    if not tests:
        return Outcome(m, "survived", "no test selected", 0.0)
    originals: dict[str, str] = {}
    for edit in m.edits:
        path = copy / edit.file
        current = path.read_text(encoding="utf-8")
        originals.setdefault(edit.file, current)
        path.write_text(current.replace(edit.original, edit.replacement, 1), encoding="utf-8")
    try:
        code, output = run_pytest(copy, tests, timeout)
    finally:
        for file, text in originals.items():
            (copy / file).write_text(text, encoding="utf-8")
    seconds = time.monotonic() - start
    if code is None:
        return Outcome(m, "killed", f"timeout after {timeout:.0f} s", seconds)
    if code == 0:
        return Outcome(m, "survived", f"{len(tests)} test argument(s) passed", seconds)
    if code in (1, 2) and "imported from" not in output:
        return Outcome(m, "killed", first_failure(output), seconds)
    return Outcome(m, "error", f"pytest exit {code}: {first_failure(output)}", seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        metavar="MODULE",
        help="only the mutants of this module (stats, train, ...); repeatable",
    )
    parser.add_argument(
        "--name",
        action="append",
        metavar="PATTERN",
        help="only the mutants whose name matches this glob (tuned.*, train.frozen-*); repeatable",
    )
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--jobs", type=int, default=1, help="mutants checked at once (1)")
    parser.add_argument(
        "--min",
        type=float,
        default=0.95,
        help="exit 1 when the killed fraction is below this (0.95)",
    )
    parser.add_argument(
        "--ignore-new",
        action="store_true",
        help=f"leave out the tests written for this check ({', '.join(NEW_TESTS)})",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip running the selected tests on the unmutated copy first",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT_S,
        help="seconds per mutant before it counts as killed (300)",
    )
    args = parser.parse_args(argv)

    mutants = [
        m
        for m in CATALOGUE
        if (not args.only or m.module in args.only)
        and (not args.name or any(fnmatch.fnmatchcase(m.name, p) for p in args.name))
    ]
    if not mutants:
        modules = sorted({m.module for m in CATALOGUE})
        parser.error(f"no mutant matches; modules: {', '.join(modules)}")
    if args.list:
        for m in mutants:
            mark = " [STALE]" if stale_edits(m) else ""
            print(f"{m.name:40s} {m.description}{mark}")
            print(f"{'':40s} tests: {' '.join(select_tests(m, args.ignore_new)) or '-'}")
        print(f"{len(mutants)} mutants")
        return 0

    started = time.monotonic()
    jobs = max(1, args.jobs)
    with tempfile.TemporaryDirectory(prefix="aaf-mutation-") as tmp:
        copies: queue.Queue[Path] = queue.Queue()
        for k in range(jobs):
            (Path(tmp) / str(k)).mkdir()
            copies.put(copy_tree(Path(tmp) / str(k)))
        if not args.no_baseline:
            copy = copies.get()
            union = list(
                dict.fromkeys(t for m in mutants for t in select_tests(m, args.ignore_new))
            )
            code, output = run_pytest(copy, union, 3 * args.timeout)
            copies.put(copy)
            if code != 0:
                print(
                    f"baseline: the selected tests fail without any mutation "
                    f"({first_failure(output)}); fix that first",
                    file=sys.stderr,
                )
                print(output[-3000:], file=sys.stderr)
                return 2
            print(
                f"baseline: {len(union)} test arguments pass on the unmutated copy "
                f"({time.monotonic() - started:.0f} s)"
            )
        lock = threading.Lock()

        def work(m: Mutant) -> Outcome:
            copy = copies.get()
            try:
                result = check(m, copy, args.ignore_new, args.timeout)
            finally:
                copies.put(copy)
            with lock:
                print(
                    f"{result.status:8s} {m.name:40s} {result.seconds:5.1f} s  {result.detail}",
                    flush=True,
                )
            return result

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            outcomes = list(pool.map(work, mutants))

    counted = [o for o in outcomes if o.status in ("killed", "survived")]
    killed = sum(1 for o in counted if o.status == "killed")
    stale = [o for o in outcomes if o.status == "stale"]
    errors = [o for o in outcomes if o.status == "error"]
    total = len(counted)
    fraction = killed / total if total else 0.0
    print(
        f"killed {killed}/{total} ({100 * fraction:.0f}%) in {time.monotonic() - started:.0f} s"
        + (f"; {len(stale)} stale" if stale else "")
        + (f"; {len(errors)} errors" if errors else "")
    )
    survived = [o.mutant.name for o in counted if o.status == "survived"]
    if survived:
        print("survived: " + ", ".join(survived))
    if stale or errors or fraction < args.min:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
