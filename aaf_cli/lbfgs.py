"""Batched L-BFGS: every model of an ensemble runs its own ``torch.optim.LBFGS``, and one
function evaluation serves all of them at once.

Each model keeps its own curvature pairs (s, y), inverse-Hessian scale, step length, line-search
state, evaluation count and convergence: a model whose search is done, or that has converged,
keeps its point while the others go on. The line search is ``torch.optim.LBFGS``'s strong-Wolfe
search (``_strong_wolfe``, ported from Mark Schmidt's minFunc through torch/optim's lswolfe.lua),
run per model as a coroutine that asks for trial step lengths; every round evaluates all models
at their own trial points in one batched pass. ``backtracking`` is a cheaper search: Armijo's
sufficient decrease, halving the step (one evaluation per iteration, most of the time).

One ``step`` is one L-BFGS iteration of every running model (torch's ``max_iter`` counts the
same iterations): a run of ``steps`` steps equals one call of ``torch.optim.LBFGS(...,
max_iter=steps).step(closure)`` per model, in float64 up to the order of floating-point sums
(tests/test_lbfgs.py compares them). Where torch's search would go on with a non-finite trial
loss (its comparisons with NaN are false), this one takes the trial as too long a step.

Vectors are held per model in a padded ``[M, P]`` layout (P the largest model's parameter
count; padding stays zero), so that every per-model dot product is one row sum; the optimiser's
flat tensor (``_Stacked``) keeps the parameters' storage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import torch

from aaf_cli.train import Losses, _Stacked

#: One evaluation of every model at the given flat parameter values (laid out as
#: ``_Stacked.flat``), with the mask of models still active: the logged data metric ``[M]``,
#: the minimised loss ``[M]``, the values to log, and the flat gradient of each model's loss.
Evaluate = Callable[
    [torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor],
]

#: A line search as a coroutine: it yields trial step lengths, is sent (loss, directional
#: derivative, round) for each, and returns (loss, round, step length, evaluations) of the
#: point it accepts; round -1 is the starting point.
Search = Generator[float, tuple[float, float, int], tuple[float, int, float, int]]

LINE_SEARCHES = ("strong_wolfe", "backtracking")

#: Why a model stopped, by the test that stopped it (``torch.optim.LBFGS``'s own tests).
STOP_REASONS = {
    "gradient": "gradient below tolerance_grad",
    "descent": "no descent direction (g.d > -tolerance_change)",
    "step": "step below tolerance_change",
    "change": "loss change below tolerance_change",
    "evals": "evaluation budget (max_evals) spent",
    "diverged": "non-finite loss",
}


def cubic_minimum(
    x1: float,
    f1: float,
    g1: float,
    x2: float,
    f2: float,
    g2: float,
    bounds: tuple[float, float] | None = None,
) -> float:
    """The minimiser of the cubic through two points with values and slopes, clamped to
    ``bounds`` (default: the interval between the points); ``torch.optim.lbfgs.
    _cubic_interpolate``. The middle of the bounds where no real minimiser exists, where the
    two points coincide, or where an input is not finite (a trial beyond the loss's finite
    region)."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    if x1 == x2 or not all(math.isfinite(v) for v in (x1, f1, g1, x2, f2, g2)):
        return (xmin_bound + xmax_bound) / 2.0
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2  # as torch's tensor d1**2 rounds (Python's ** can differ)
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def strong_wolfe(
    t: float,
    f: float,
    gtd: float,
    d_norm: float,
    max_ls: int,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
) -> Search:
    """``torch.optim.lbfgs._strong_wolfe`` for one model, as a coroutine (see ``Search``): a
    bracketing phase, then a zoom by cubic interpolation, until the strong Wolfe conditions
    hold, the bracket is shorter than ``tolerance_change`` or ``max_ls`` evaluations are
    spent. ``d_norm`` is the direction's largest element."""

    def received(value: tuple[float, float, int]) -> tuple[float, float, int]:
        f_new, gtd_new, ref = value
        return (f_new if math.isfinite(f_new) else math.inf), gtd_new, ref

    f_new, gtd_new, ref_new = received((yield t))
    evals = 1
    t_prev, f_prev, ref_prev, gtd_prev = 0.0, f, -1, gtd
    done = False
    ls_iter = 0
    bracket: list[float] = []
    bracket_f: list[float] = []
    bracket_ref: list[int] = []
    bracket_gtd: list[float] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_ref, bracket_gtd = [ref_prev, ref_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_ref = [t], [f_new], [ref_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_ref, bracket_gtd = [ref_prev, ref_new], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, (min_step, max_step))
        t_prev, f_prev, ref_prev, gtd_prev = tmp, f_new, ref_new, gtd_new
        f_new, gtd_new, ref_new = received((yield t))
        evals += 1
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_ref = [0.0, t], [f, f_new], [-1, ref_new]
    insuf_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        # A bracket of no width ends the search too (torch's tensors would make its next
        # trial NaN; with tolerance_change 0 only this test stops the zoom).
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change or bracket[0] == bracket[1]:
            break
        t = cubic_minimum(
            bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1]
        )
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, gtd_new, ref_new = received((yield t))
        evals += 1
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high] = t, f_new
            bracket_ref[high], bracket_gtd[high] = ref_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_ref[high], bracket_gtd[high] = bracket_ref[low], bracket_gtd[low]
            bracket[low], bracket_f[low] = t, f_new
            bracket_ref[low], bracket_gtd[low] = ref_new, gtd_new
    return bracket_f[low], bracket_ref[low], bracket[low], evals


def backtracking(t: float, f: float, gtd: float, max_ls: int, c1: float = 1e-4) -> Search:
    """Armijo backtracking for one model, as a coroutine (see ``Search``): the first step
    length, halved, whose loss is at most ``f + c1 * t * gtd``; the starting point (no move)
    when ``max_ls`` evaluations find none."""
    evals = 0
    while True:
        f_new, _, ref = yield t
        evals += 1
        if math.isfinite(f_new) and f_new <= f + c1 * t * gtd:
            return f_new, ref, t, evals
        if evals >= max_ls:
            return f, -1, 0.0, evals
        t *= 0.5


@dataclass(frozen=True)
class LbfgsOptions:
    """``torch.optim.LBFGS``'s options (``max_evals`` is its ``max_eval``: function evaluations
    per model over the run, the first one included)."""

    lr: float = 1.0
    history_size: int = 100
    line_search: str = "strong_wolfe"
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    max_evals: int = 25


class StackedLBFGS(_Stacked):
    """L-BFGS over stacked parameters, every model on its own (see the module's docstring).

    ``start`` evaluates the starting point (torch's first closure call); each ``step`` is one
    iteration of every running model; ``values`` holds the losses and logged values at the
    current points, ``evals`` each model's function evaluations so far, ``stopped`` why a model
    stopped (``STOP_REASONS``'s keys) or None while it runs. Elements whose learning rate is
    zero are frozen (their gradient is masked); the rates' values are otherwise unused: the
    step length comes from the line search, scaled by ``lr`` as in torch.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        rates: Sequence[torch.Tensor],
        offsets: Sequence[int],
        models: int,
        options: LbfgsOptions,
    ) -> None:
        super().__init__(params, rates, offsets)
        if options.line_search not in LINE_SEARCHES:
            raise ValueError(
                f"unknown line search {options.line_search!r} (valid: {', '.join(LINE_SEARCHES)})"
            )
        if options.history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.options = options
        self.models = models
        flat = self.flat
        device, dtype = flat.device, flat.dtype
        rows = self.row_of
        counts = torch.bincount(rows, minlength=models)
        width = max(int(counts.max()), 1)
        order = torch.argsort(rows, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        within = torch.empty_like(rows)
        within[order] = torch.arange(rows.numel(), device=device) - starts[rows[order]]
        #: Flat element -> its place in the padded [M, P] layout.
        self.place = rows * width + within
        gather = torch.full((models * width,), flat.numel(), dtype=torch.long, device=device)
        gather[self.place] = torch.arange(flat.numel(), device=device)
        #: Padded place -> flat element (``flat.numel()``: padding, reads zero).
        self.gather = gather.view(models, width)
        keep = torch.zeros(models * width, dtype=torch.bool, device=device)
        keep[self.place] = self.rate > 0
        self.keep = keep.view(models, width)
        zeros = torch.zeros(models, width, dtype=dtype, device=device)
        self.x = self.padded(flat)
        self.g = zeros.clone()
        self.d = zeros.clone()
        self.prev_g = zeros.clone()
        history = options.history_size
        self.s_hist = torch.zeros(models, history, width, dtype=dtype, device=device)
        self.y_hist = torch.zeros_like(self.s_hist)
        self.ro = torch.zeros(models, history, dtype=dtype, device=device)
        self.h_diag = torch.ones(models, dtype=dtype, device=device)
        self.head = torch.zeros(models, dtype=torch.long, device=device)
        self.count = torch.zeros(models, dtype=torch.long, device=device)
        self.n_iter = [0] * models
        self.evals = [0] * models
        self.loss = [math.nan] * models
        self.t = [0.0] * models
        self.stopped: list[str | None] = [None] * models
        self.values: Losses | None = None

    def padded(self, flat: torch.Tensor) -> torch.Tensor:
        """A tensor laid out like ``flat`` as ``[M, P]`` rows, one per model (padding zero)."""
        return torch.cat([flat, flat.new_zeros(1)])[self.gather]

    def unpadded(self, rows: torch.Tensor) -> torch.Tensor:
        """``[M, P]`` rows back in ``flat``'s layout."""
        return rows.reshape(-1)[self.place]

    def running(self) -> list[int]:
        """The models that have not stopped."""
        return [m for m in range(self.models) if self.stopped[m] is None]

    @torch.no_grad()
    def _evaluate(
        self, evaluate: Evaluate, point: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(padded gradient, data, loss, logged) of every model at ``point`` ``[M, P]``."""
        data, loss, logged, grad = evaluate(self.unpadded(point), active)
        g = torch.where(self.keep, self.padded(grad), 0.0)
        return g, data.detach(), loss.detach(), {k: v.detach() for k, v in logged.items()}

    @torch.no_grad()
    def start(self, evaluate: Evaluate, active: torch.Tensor) -> None:
        """Evaluate every model at its starting point (one evaluation each); a model whose
        gradient is already below ``tolerance_grad``, or whose loss is not finite, stops."""
        self.x = self.padded(self.flat)
        g, data, loss, logged = self._evaluate(evaluate, self.x, active)
        self.g = g
        self.values = (data, loss, logged)
        self.loss = loss.double().tolist()
        top = g.abs().amax(1).double().tolist()
        for m in range(self.models):
            self.evals[m] += 1
            if not bool(active[m]) or not math.isfinite(self.loss[m]):
                self.stopped[m] = "diverged"
            elif top[m] <= self.options.tolerance_grad:
                self.stopped[m] = "gradient"

    def _direction(self, renew: torch.Tensor, first: torch.Tensor) -> None:
        """The next direction of the models in ``renew`` ``[M]``: the steepest descent for
        those in ``first``, else the two-loop recursion over each model's own pairs after
        adding the newest one (when its curvature ``y.s`` exceeds 1e-10, as torch)."""
        later = renew & ~first
        if bool(later.any()):
            t = torch.tensor(self.t, dtype=self.g.dtype, device=self.g.device)
            y = self.g - self.prev_g
            s = self.d * t[:, None]
            ys = (y * s).sum(1)
            add = later & (ys > 1e-10)
            if bool(add.any()):
                size = self.options.history_size
                rows = torch.nonzero(add).squeeze(1)
                at = self.head[rows]
                self.y_hist[rows, at] = y[rows]
                self.s_hist[rows, at] = s[rows]
                self.ro[rows, at] = 1.0 / ys[rows]
                self.h_diag = torch.where(add, ys / (y * y).sum(1), self.h_diag)
                self.head = torch.where(add, (self.head + 1) % size, self.head)
                self.count = torch.where(add, (self.count + 1).clamp(max=size), self.count)
            deepest = int(self.count[later].max())
            everyone = torch.arange(self.models, device=self.g.device)
            size = self.options.history_size
            slots = [(self.head - 1 - k) % size for k in range(deepest)]
            valid = [later & (k < self.count) for k in range(deepest)]
            al: list[torch.Tensor] = []
            q = -self.g
            for k in range(deepest):  # newest pair first
                s_k, y_k = self.s_hist[everyone, slots[k]], self.y_hist[everyone, slots[k]]
                a = torch.where(valid[k], (s_k * q).sum(1) * self.ro[everyone, slots[k]], 0.0)
                al.append(a)
                q = q - a[:, None] * y_k
            r = q * self.h_diag[:, None]
            for k in reversed(range(deepest)):  # oldest pair first
                s_k, y_k = self.s_hist[everyone, slots[k]], self.y_hist[everyone, slots[k]]
                be = (y_k * r).sum(1) * self.ro[everyone, slots[k]]
                r = r + torch.where(valid[k], al[k] - be, 0.0)[:, None] * s_k
            self.d = torch.where(later[:, None], r, self.d)
        self.d = torch.where(first[:, None], -self.g, self.d)

    @torch.no_grad()
    def step(self, evaluate: Evaluate, active: torch.Tensor, max_iter: int | None = None) -> None:
        """One iteration of every running model: a direction, a line search (one batched
        evaluation per round of trial points), the move, and torch's stopping tests.
        ``max_iter``: the run's iteration count (after which no test matters)."""
        opts = self.options
        alive = active.tolist()
        for m in self.running():
            if not alive[m]:
                self.stopped[m] = "diverged"
        going = self.running()
        if not going:
            return
        device = self.g.device
        renew = torch.zeros(self.models, dtype=torch.bool, device=device)
        renew[going] = True
        first = torch.zeros_like(renew)
        first[[m for m in going if self.n_iter[m] == 0]] = True
        for m in going:
            self.n_iter[m] += 1
        self._direction(renew, first)
        self.prev_g = self.g.clone()
        prev_loss = list(self.loss)
        gtd, g_sum, d_top = (
            torch.stack([(self.g * self.d).sum(1), self.g.abs().sum(1), self.d.abs().amax(1)])
            .double()
            .tolist()
        )
        searches: dict[int, Search] = {}
        for m in going:
            if self.n_iter[m] == 1:
                self.t[m] = min(1.0, 1.0 / g_sum[m]) * opts.lr
            else:
                self.t[m] = opts.lr
            if gtd[m] > -opts.tolerance_change:
                self.stopped[m] = "descent"
                continue
            budget = opts.max_evals - self.evals[m]
            if opts.line_search == "strong_wolfe":
                searches[m] = strong_wolfe(
                    self.t[m], self.loss[m], gtd[m], d_top[m], budget,
                    tolerance_change=opts.tolerance_change,
                )  # fmt: skip
            else:
                searches[m] = backtracking(self.t[m], self.loss[m], gtd[m], min(budget, 25))
        if not searches:
            return
        requests = {m: next(search) for m, search in searches.items()}
        found: dict[int, tuple[float, int, float, int]] = {}
        rounds: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]
        rounds = []
        while requests:
            trial = torch.tensor(
                [requests.get(m, 0.0) for m in range(self.models)],
                dtype=self.x.dtype,
                device=device,
            )
            point = torch.where(trial[:, None] != 0, self.x + trial[:, None] * self.d, self.x)
            g, data, loss, logged = self._evaluate(evaluate, point, active)
            rounds.append((g, data, loss, logged))
            f_new, gtd_new = torch.stack([loss, (g * self.d).sum(1)]).double().tolist()
            for m in list(requests):
                try:
                    requests[m] = searches[m].send((f_new[m], gtd_new[m], len(rounds) - 1))
                except StopIteration as end:
                    found[m] = end.value
                    del requests[m]
        # Each model's accepted point, gradient and values: from its round (-1: where it was).
        steps = [0.0] * self.models
        which = [0] * self.models
        for m, (f_m, ref, t_m, used) in found.items():
            steps[m], which[m] = t_m, ref + 1
            self.loss[m] = f_m
            self.t[m] = t_m
            self.evals[m] += used
        assert self.values is not None
        data0, loss0, logged0 = self.values
        pick = torch.tensor(which, device=device)
        everyone = torch.arange(self.models, device=device)
        self.g = torch.stack([self.g] + [r[0] for r in rounds])[pick, everyone]
        self.values = (
            torch.stack([data0] + [r[1] for r in rounds])[pick, everyone],
            torch.stack([loss0] + [r[2] for r in rounds])[pick, everyone],
            {
                k: torch.stack([v] + [r[3][k] for r in rounds])[pick, everyone]
                for k, v in logged0.items()
            },
        )
        length = torch.tensor(steps, dtype=self.x.dtype, device=device)
        self.x = torch.where(length[:, None] != 0, self.x + length[:, None] * self.d, self.x)
        self.flat.copy_(self.unpadded(self.x))
        g_top, move_top = (
            torch.stack([self.g.abs().amax(1), (self.d * length[:, None]).abs().amax(1)])
            .double()
            .tolist()
        )
        for m in found:
            if max_iter is not None and self.n_iter[m] >= max_iter:
                continue
            if self.evals[m] >= opts.max_evals:
                self.stopped[m] = "evals"
            elif g_top[m] <= opts.tolerance_grad:
                self.stopped[m] = "gradient"
            elif move_top[m] <= opts.tolerance_change:
                self.stopped[m] = "step"
            elif abs(self.loss[m] - prev_loss[m]) < opts.tolerance_change:
                self.stopped[m] = "change"
