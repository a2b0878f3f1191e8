"""Batched L-BFGS: every model of an ensemble runs its own ``torch.optim.LBFGS``, and one
function evaluation serves all of them at once.

Each model keeps its own curvature pairs (s, y), inverse-Hessian scale, step length, line-search
state, evaluation count and convergence: a model whose search is done, or that has converged,
keeps its point while the others go on. The line search is ``torch.optim.LBFGS``'s strong-Wolfe
search (``_strong_wolfe``, ported from Mark Schmidt's minFunc through torch/optim's lswolfe.lua),
run per model as a coroutine that asks for trial step lengths; every round evaluates all models
at their own trial points in one batched pass, and a model whose search has ended starts its
next iteration in the next round rather than wait for the others (``StackedLBFGS``).
``backtracking`` is a cheaper search: Armijo's sufficient decrease, halving the step (one
evaluation per iteration, most of the time).

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


@dataclass
class _Finished:
    """One model's finished iteration, held until ``step`` hands it on: where it ended, the
    values there, the evaluations spent so far, and why the model stopped (None: it goes on)."""

    x: torch.Tensor
    data: torch.Tensor
    loss: torch.Tensor
    logged: dict[str, torch.Tensor]
    loss_value: float
    evals: int
    stopped: str | None


#: (gradient ``[M, P]``, data ``[M]``, loss ``[M]``, logged ``{name: [M]}``) of one round.
_Round = tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]


class StackedLBFGS(_Stacked):
    """L-BFGS over stacked parameters, every model on its own (see the module's docstring).

    ``start`` evaluates the starting point (torch's first closure call); each ``step`` is one
    iteration of every running model; ``values`` holds the losses and logged values at the
    current points, ``loss`` the losses as floats, ``evals`` each model's function evaluations
    so far, ``stopped`` why a model stopped (``STOP_REASONS``'s keys) or None while it runs.
    Elements whose learning rate is zero are frozen (their gradient is masked); the rates'
    values are otherwise unused: the step length comes from the line search, scaled by ``lr``
    as in torch.

    The models do not wait for each other: a model whose line search ends while another's goes
    on starts its next iteration in the next round, up to ``lookahead`` iterations ahead of the
    iteration ``step`` hands on (and never past ``max_iter``), so that a round evaluates every
    model at a point it asked for, not only the slowest one's. What a model does is its own
    either way (its rows of a batched evaluation do not depend on the others'), so ``step``'s
    results are those of iterating in lockstep; only the number of rounds differs. The working
    state (``x``, ``g``, ``d``, the history, ``n_iter``, ``spent``) is the front of each model's
    run; ``flat``, ``values``, ``loss``, ``evals`` and ``stopped`` are what ``step`` handed on.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        rates: Sequence[torch.Tensor],
        offsets: Sequence[int],
        models: int,
        options: LbfgsOptions,
        lookahead: int = 16,
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
        self.lookahead = max(lookahead, 1)
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
        self.held = self.x.clone()  # the points handed on
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
        self.spent = [0] * models
        self.t = [0.0] * models
        self.front: list[float] = [math.nan] * models  # the loss at each model's front
        self.done: list[str | None] = [None] * models  # why a model's front stopped
        self.here: Losses | None = None  # the values at each model's front
        self.searches: dict[int, Search] = {}
        self.requests: dict[int, float] = {}
        self.trails: dict[int, list[_Round]] = {}
        self.began_at: dict[int, float] = {}
        self.queue: list[list[_Finished]] = [[] for _ in range(models)]
        self.rounds = 0
        self.evals = [0] * models
        self.loss = [math.nan] * models
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
    def _evaluate(self, evaluate: Evaluate, point: torch.Tensor, active: torch.Tensor) -> _Round:
        """(padded gradient, data, loss, logged) of every model at ``point`` ``[M, P]``."""
        data, loss, logged, grad = evaluate(self.unpadded(point), active)
        g = torch.where(self.keep, self.padded(grad), 0.0)
        return g, data.detach(), loss.detach(), {k: v.detach() for k, v in logged.items()}

    @torch.no_grad()
    def start(self, evaluate: Evaluate, active: torch.Tensor) -> None:
        """Evaluate every model at its starting point (one evaluation each); a model whose
        gradient is already below ``tolerance_grad``, or whose loss is not finite, stops."""
        self.x = self.padded(self.flat)
        self.held = self.x.clone()
        g, data, loss, logged = self._evaluate(evaluate, self.x, active)
        self.flat.copy_(self.unpadded(self.held))
        self.g = g
        self.values = (data, loss, logged)
        self.here = (data.clone(), loss.clone(), {k: v.clone() for k, v in logged.items()})
        self.loss = loss.double().tolist()
        self.front = list(self.loss)
        top = g.abs().amax(1).double().tolist()
        for m in range(self.models):
            self.evals[m] += 1
            self.spent[m] += 1
            if not bool(active[m]) or not math.isfinite(self.loss[m]):
                self.stopped[m] = self.done[m] = "diverged"
            elif top[m] <= self.options.tolerance_grad:
                self.stopped[m] = self.done[m] = "gradient"

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
            size = self.options.history_size
            # Each model's pairs newest first, gathered once: [M, deepest, P].
            back = torch.arange(deepest, device=self.g.device)
            slots = (self.head[:, None] - 1 - back) % size
            everyone = torch.arange(self.models, device=self.g.device)[:, None]
            s_k, y_k = self.s_hist[everyone, slots], self.y_hist[everyone, slots]
            valid = later[:, None] & (back < self.count[:, None])
            ro = torch.where(valid, self.ro[everyone, slots], 0.0)
            al: list[torch.Tensor] = []
            q = -self.g
            for k in range(deepest):  # newest pair first
                a = torch.linalg.vecdot(s_k[:, k], q) * ro[:, k]
                al.append(a)
                q = torch.addcmul(q, a[:, None], y_k[:, k], value=-1.0)
            r = q * self.h_diag[:, None]
            for k in reversed(range(deepest)):  # oldest pair first
                be = torch.linalg.vecdot(y_k[:, k], r) * ro[:, k]
                r = torch.addcmul(r, (al[k] - be)[:, None], s_k[:, k])
            self.d = torch.where(later[:, None], r, self.d)
        self.d = torch.where(first[:, None], -self.g, self.d)
        self.prev_g = torch.where(renew[:, None], self.g, self.prev_g)

    def _finish(self, m: int, stopped: str | None) -> None:
        """Queue model ``m``'s front (its iteration is done) for ``step`` to hand on."""
        assert self.here is not None
        data, loss, logged = self.here
        self.queue[m].append(
            _Finished(
                self.x[m].clone(),
                data[m].clone(),
                loss[m].clone(),
                {k: v[m].clone() for k, v in logged.items()},
                self.front[m],
                self.spent[m],
                stopped,
            )
        )
        if stopped is not None:
            self.done[m] = stopped

    def _begin(self, models: list[int]) -> None:
        """Start the next iteration of ``models``: a direction each, then a line search (a
        model without a descent direction stops here, where it is)."""
        opts = self.options
        device = self.g.device
        renew = torch.zeros(self.models, dtype=torch.bool, device=device)
        renew[models] = True
        first = torch.zeros_like(renew)
        first[[m for m in models if self.n_iter[m] == 0]] = True
        for m in models:
            self.n_iter[m] += 1
        self._direction(renew, first)
        gtd, g_sum, d_top = (
            torch.stack([(self.g * self.d).sum(1), self.g.abs().sum(1), self.d.abs().amax(1)])
            .double()
            .tolist()
        )
        for m in models:
            if self.n_iter[m] == 1:
                self.t[m] = min(1.0, 1.0 / g_sum[m]) * opts.lr
            else:
                self.t[m] = opts.lr
            if gtd[m] > -opts.tolerance_change:
                self._finish(m, "descent")
                continue
            budget = opts.max_evals - self.spent[m]
            if opts.line_search == "strong_wolfe":
                search = strong_wolfe(
                    self.t[m], self.front[m], gtd[m], d_top[m], budget,
                    tolerance_change=opts.tolerance_change,
                )  # fmt: skip
            else:
                search = backtracking(self.t[m], self.front[m], gtd[m], min(budget, 25))
            self.searches[m] = search
            self.trails[m] = []
            self.began_at[m] = self.front[m]
            self.requests[m] = next(search)

    def _accept(self, ends: dict[int, tuple[float, int, float, int]], max_iter: int | None) -> None:
        """Move the models whose line search ended to the points they accepted, and apply
        torch's stopping tests."""
        assert self.here is not None
        data, loss, logged = self.here
        device = self.x.device
        length = torch.zeros(self.models, dtype=self.x.dtype, device=device)
        for m, (f_m, ref, t_m, used) in ends.items():
            trail = self.trails.pop(m)
            del self.searches[m]
            if ref >= 0:
                g_r, data_r, loss_r, logged_r = trail[ref]
                self.g[m] = g_r[m]
                data[m], loss[m] = data_r[m], loss_r[m]
                for k, v in logged.items():
                    v[m] = logged_r[k][m]
            self.front[m] = f_m
            self.t[m] = t_m
            self.spent[m] += used
            length[m] = t_m
        rows = list(ends)
        picked = torch.tensor(rows, device=device)
        self.x[picked] += length[picked, None] * self.d[picked]
        move = self.d[picked] * length[picked, None]
        g_top, move_top = (
            torch.stack([self.g[picked].abs().amax(1), move.abs().amax(1)]).double().tolist()
        )
        opts = self.options
        for i, m in enumerate(rows):
            began = self.began_at.pop(m)
            stopped = None
            if max_iter is not None and self.n_iter[m] >= max_iter:
                pass
            elif self.spent[m] >= opts.max_evals:
                stopped = "evals"
            elif g_top[i] <= opts.tolerance_grad:
                stopped = "gradient"
            elif move_top[i] <= opts.tolerance_change:
                stopped = "step"
            elif abs(self.front[m] - began) < opts.tolerance_change:
                stopped = "change"
            self._finish(m, stopped)

    def _round(self, evaluate: Evaluate, active: torch.Tensor, max_iter: int | None) -> None:
        """One batched evaluation: every model with a trial step at its own trial point (the
        others where they are), each search sent its result."""
        trial = torch.tensor(
            [self.requests.get(m, 0.0) for m in range(self.models)],
            dtype=self.x.dtype,
            device=self.x.device,
        )
        point = torch.where(trial[:, None] != 0, self.x + trial[:, None] * self.d, self.x)
        result = self._evaluate(evaluate, point, active)
        self.rounds += 1
        g, _, loss, _ = result
        f_new, gtd_new = torch.stack([loss, (g * self.d).sum(1)]).double().tolist()
        ends: dict[int, tuple[float, int, float, int]] = {}
        for m in list(self.requests):
            trail = self.trails[m]
            trail.append(result)
            try:
                self.requests[m] = self.searches[m].send((f_new[m], gtd_new[m], len(trail) - 1))
            except StopIteration as end:
                ends[m] = end.value
                del self.requests[m]
        if ends:
            self._accept(ends, max_iter)

    @torch.no_grad()
    def step(self, evaluate: Evaluate, active: torch.Tensor, max_iter: int | None = None) -> None:
        """One iteration of every running model: a direction, a line search (one batched
        evaluation per round of trial points), the move, and torch's stopping tests.
        ``max_iter``: the run's iteration count (after which no test matters, and no model
        starts another iteration)."""
        alive = active.tolist()
        for m in self.running():
            if not alive[m]:
                self.stopped[m] = self.done[m] = "diverged"
                self.queue[m].clear()
                self.searches.pop(m, None)
                self.requests.pop(m, None)
                self.trails.pop(m, None)
        waiting = self.running()
        while True:
            fresh = [
                m
                for m in range(self.models)
                if self.done[m] is None
                and m not in self.searches
                and len(self.queue[m]) < self.lookahead
                and (max_iter is None or self.n_iter[m] < max_iter)
            ]
            if fresh:
                self._begin(fresh)
            # A model with nothing finished and nothing under way has reached max_iter.
            if not any(not self.queue[m] and m in self.searches for m in waiting):
                break
            self._round(evaluate, active, max_iter)
        ready = [m for m in waiting if self.queue[m]]
        if ready:
            assert self.values is not None
            picked = [self.queue[m].pop(0) for m in ready]
            rows = torch.tensor(ready, device=self.x.device)
            self.held[rows] = torch.stack([f.x for f in picked])
            # New tensors: the values handed on before stay as they were.
            data, loss = self.values[0].clone(), self.values[1].clone()
            data[rows] = torch.stack([f.data for f in picked])
            loss[rows] = torch.stack([f.loss for f in picked])
            logged = {k: v.clone() for k, v in self.values[2].items()}
            for k, v in logged.items():
                v[rows] = torch.stack([f.logged[k] for f in picked])
            self.values = (data, loss, logged)
            for m, f in zip(ready, picked):
                self.loss[m] = f.loss_value
                self.evals[m] = f.evals
                self.stopped[m] = f.stopped
        # The evaluations wrote trial points into the parameters: back to those handed on.
        self.flat.copy_(self.unpadded(self.held))
