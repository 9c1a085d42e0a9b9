"""The `budget` policy: the assignment with the highest total expected reward whose
expected cost fits `routing.budget` and whose per-teacher shares fit `routing.max_share`;
exact (a 0/1 program, scipy's HiGHS) up to EXACT_MAX_VARIABLES prompt x teacher pairs, a
near-optimal one that still fits above (Lagrangian bisection or the rounded LP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from persyn.config import ConfigError
from persyn.policies.base import Policy, expected_reward

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

# Largest problem (routed prompts x teachers) solved exactly: 1K x 20, a second or two.
# HiGHS's branch and bound on the 0/1 program grows as N^2.1 (2.8 s at 2.5K x 20, 947 s at
# 40K x 20), while the relaxations take under a second there and come within 0.001% of
# its total score (tests/test_policies.py, bench/bench_policies.py).
EXACT_MAX_VARIABLES = 20_000
# Bisection steps on the price of money: each halves the bracket, 60 reach float precision.
BISECTION_STEPS = 60
# Prompts in the sample whose LP estimates the prices that shortlist teachers per prompt.
SAMPLE_PROMPTS = 2_000
# Prompts re-solved exactly after rounding the LP: the split ones and those nearest a tie.
RESOLVED_PROMPTS = 200
# Share of prompts that get more than their best teacher in the first restricted LP.
CONTESTED_SHARE = 0.2
# An LP value this close to 1 is a whole assignment; a column that would add more than
# PRICE_TOL to the objective at the current duals joins the LP.
WHOLE_TOL = 1e-6
PRICE_TOL = 1e-9


class BudgetPolicy(Policy):
    """Highest total score under the budget and quotas: exact up to `EXACT_MAX_VARIABLES`,
    a relaxation above it (`relaxed`); `choose` picks by size."""

    name = "budget"

    def choose(self, scores: np.ndarray) -> np.ndarray:
        if len(scores) == 0:
            return np.zeros(0, dtype=np.int64)
        if scores.size <= EXACT_MAX_VARIABLES:
            return self.exact(scores)
        return self.relaxed(scores)

    def exact(self, scores: np.ndarray) -> np.ndarray:
        """The optimal assignment, as a 0/1 program over every (prompt, teacher) pair."""
        self._check_feasible(len(scores))
        x, result = _program(_gain(scores), self._caps(len(scores)), self.cost, self.cfg.budget)
        if x is None:
            raise self._infeasible(len(scores), result.message)
        return x.argmax(axis=1)

    def relaxed(self, scores: np.ndarray) -> np.ndarray:
        """A near-optimal assignment that meets the budget and quotas (57.5K x 20 in seconds):
        Lagrangian bisection for a budget alone, the LP relaxation rounded for quotas."""
        self._check_feasible(len(scores))
        gain = _gain(scores)
        if self.cfg.max_share and gain.shape[1] > 1:  # one teacher: the quota check suffices
            return self._rounded_lp(gain)
        budget = self.cfg.budget
        if budget is None:
            return gain.argmax(axis=1)
        return _fill(gain, self.cost, _lagrangian(gain, self.cost, budget), budget)

    def _rounded_lp(self, gain: np.ndarray) -> np.ndarray:
        caps = self._caps(len(gain))
        solved = _relaxation(gain, caps, self.cost, self.cfg.budget)
        if solved is None:
            raise self._infeasible(len(gain), "the LP relaxation is infeasible")
        x, reduced = solved
        # A vertex of the relaxation splits at most one prompt per constraint beyond "one
        # teacher each"; the rest are whole. The split prompts, and the whole ones nearest to
        # a tie at the LP's prices (they can use the budget or room rounding frees), are
        # re-solved exactly in the room the others leave, which the relaxation proves
        # feasible: the others keep their teacher.
        choice = x.argmax(axis=1)
        top2 = -np.partition(-reduced, 1, axis=1)[:, :2]
        near = np.argsort(top2[:, 0] - top2[:, 1])[:RESOLVED_PROMPTS]
        redo = np.union1d(np.flatnonzero(x.max(axis=1) < 1 - WHOLE_TOL), near)
        kept = np.delete(choice, redo)
        room = caps - np.bincount(kept, minlength=len(caps))
        left = None if self.cfg.budget is None else self.cfg.budget - self.cost[kept].sum()
        sub, result = _program(gain[redo], room, self.cost, left)
        if sub is None:
            raise self._infeasible(len(gain), result.message)
        choice[redo] = sub.argmax(axis=1)
        return choice

    def _caps(self, n_prompts: int) -> np.ndarray:
        """Most prompts per teacher; inf where uncapped."""
        caps = np.full(len(self.teachers), np.inf)
        for name, share in self.cfg.max_share.items():
            caps[self.teachers.index(name)] = np.floor(share * n_prompts)
        return caps

    def _infeasible(self, n_prompts: int, why: str) -> ConfigError:
        return ConfigError(
            f"routing: no assignment of {n_prompts} prompts meets budget "
            f"{self.cfg.budget} and max_share {self.cfg.max_share} ({why}); "
            "raise routing.budget or the quotas"
        )

    def _check_feasible(self, n_prompts: int) -> None:
        cheapest = float(self.cost.min()) * n_prompts
        if self.cfg.budget is not None and cheapest > self.cfg.budget + 1e-9:
            raise ConfigError(
                f"routing.budget: {self.cfg.budget} is below the cheapest possible assignment "
                f"of {n_prompts} prompts ({cheapest:.4g}); raise it"
            )
        room = np.minimum(self._caps(n_prompts), n_prompts).sum()
        if room < n_prompts:
            raise ConfigError(
                f"routing.max_share: the quotas {self.cfg.max_share} leave room for "
                f"{int(room)} of {n_prompts} prompts; raise them"
            )


def _gain(scores: np.ndarray) -> np.ndarray:
    """Expected reward (`expected_reward`) relative to each prompt's best: the same
    optimum, better conditioned, in [-1, 0]."""
    reward = expected_reward(scores)
    return reward - reward.max(axis=1, keepdims=True)


def _program(
    gain: np.ndarray,
    caps: np.ndarray,
    cost: np.ndarray,
    budget: float | None,
    allowed: np.ndarray | None = None,
    integral: bool = True,
) -> tuple[np.ndarray | None, OptimizeResult]:
    """Best assignment over the allowed (prompt, teacher) pairs (all by default): one teacher
    per prompt, at most caps[t] prompts on teacher t, total cost at most budget.

    Returns x [prompts, teachers] (None when infeasible) and HiGHS's result, whose duals the
    relaxation prices with. As a 0/1 program (`integral`) it is exact but grows as N^2.1.
    """
    from scipy.optimize import linprog
    from scipy.sparse import csr_array, vstack

    n_prompts, n_teachers = gain.shape
    rows, cols = np.nonzero(np.ones(gain.shape, bool) if allowed is None else allowed)
    n_vars = len(rows)
    ones, variables = np.ones(n_vars), np.arange(n_vars)
    capped = np.flatnonzero(np.isfinite(caps))
    # One row per capped teacher counting its prompts, then the money spent.
    limits = [csr_array((ones, (cols, variables)), shape=(n_teachers, n_vars))[capped]]
    bounds = list(caps[capped])
    if budget is not None:
        limits.append(csr_array(cost[cols][None, :]))
        bounds.append(budget)
    result = linprog(
        -gain[rows, cols],
        A_ub=vstack(limits).tocsr() if bounds else None,
        b_ub=np.array(bounds) if bounds else None,
        A_eq=csr_array((ones, (rows, variables)), shape=(n_prompts, n_vars)),
        b_eq=np.ones(n_prompts),
        bounds=(0, 1),
        method="highs",
        integrality=np.full(n_vars, int(integral)),
    )
    if result.x is None:
        return None, result
    x = np.zeros(gain.shape)
    x[rows, cols] = result.x
    return x, result


def _lagrangian(gain: np.ndarray, cost: np.ndarray, budget: float) -> np.ndarray:
    """Each prompt's best teacher at the smallest price of money that fits the budget:
    argmax(gain - price * cost), the price found by bisection (spend falls as it rises)."""

    def pick(price: float) -> np.ndarray:
        return np.argmax(gain - price * cost, axis=1)

    lo = 0.0
    if cost[pick(lo)].sum() <= budget:
        return pick(lo)
    # At hi every prompt takes a cheapest teacher: no gain gap (under 1 - min gain) is worth
    # hi times the smallest gap between two prices.
    gaps = np.diff(np.unique(cost))
    hi = (1 - gain.min()) / (gaps.min() if gaps.size else 1.0)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if cost[pick(mid)].sum() <= budget:
            hi = mid
        else:
            lo = mid
    return pick(hi)


def _fill(gain: np.ndarray, cost: np.ndarray, choice: np.ndarray, budget: float) -> np.ndarray:
    """Spend what the price left over: round by round, move prompts to the teacher with the
    most gain per extra money that still fits, best ratios first, while any fits."""
    rows = np.arange(len(gain))
    while True:
        left = budget - cost[choice].sum()
        extra = cost - cost[choice][:, None]
        better = gain - gain[rows, choice][:, None]
        fits = (better > 0) & (extra <= left)
        movers = np.flatnonzero(fits.any(axis=1))
        if movers.size == 0:
            return choice
        ratio = np.divide(better, extra, out=np.full(gain.shape, np.inf), where=extra > 0)
        target = np.where(fits, ratio, -np.inf).argmax(axis=1)
        order = movers[np.argsort(-ratio[movers, target[movers]], kind="stable")]
        # The first mover fits on its own; take the longest run of best ratios that fits.
        over = np.flatnonzero(np.cumsum(extra[order, target[order]]) > left)
        moved = order[: over[0] if over.size else None]
        choice[moved] = target[moved]


def _relaxation(
    gain: np.ndarray, caps: np.ndarray, cost: np.ndarray, budget: float | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The LP relaxation's optimum x [prompts, teachers] and the gains less its prices of
    quotas and money (its reduced scores), or None when infeasible.

    One LP over all N x T pairs takes HiGHS minutes at 57.5K x 20, yet at the optimum most
    prompts sit on one clear teacher. So (column generation): price the quotas and money on a
    sample, solve the LP over each prompt's teachers near its best at those prices, and add
    every pair the duals say would pay, until none would: that optimum is the full LP's.
    """
    teacher_price, money_price = _sample_prices(gain, caps, cost, budget)
    reduced = gain - teacher_price - money_price * cost
    margin = reduced.max(axis=1, keepdims=True) - reduced
    width = np.quantile(np.partition(margin, 1, axis=1)[:, 1], CONTESTED_SHARE)
    allowed = margin <= width
    cheap = _cheapest_teachers(caps, cost, len(gain))
    while True:
        x, result = _program(gain, caps, cost, budget, allowed, integral=False)
        if x is None:
            # With the cheapest fill allowed, the LP is feasible whenever the full one is.
            if allowed[:, cheap].all():
                return None
            allowed[:, cheap] = True
            continue
        value, teacher_price, money_price = _duals(result, caps, budget)
        reduced = gain - teacher_price - money_price * cost
        pays = (reduced - value[:, None] > PRICE_TOL) & ~allowed
        if not pays.any():
            return x, reduced
        allowed |= pays


def _sample_prices(
    gain: np.ndarray, caps: np.ndarray, cost: np.ndarray, budget: float | None
) -> tuple[np.ndarray, float]:
    """Prices of the quotas and of money in the LP over a sample, caps and budget scaled."""
    n_prompts = len(gain)
    size = min(n_prompts, SAMPLE_PROMPTS)
    sample = np.random.default_rng(0).choice(n_prompts, size, replace=False)
    scaled = None if budget is None else budget * size / n_prompts
    x, result = _program(gain[sample], caps * size / n_prompts, cost, scaled, integral=False)
    if x is None:  # a sample can miss what the whole fits: start unpriced
        return np.zeros(len(cost)), 0.0
    return _duals(result, caps, scaled)[1:]


def _duals(
    result: OptimizeResult, caps: np.ndarray, budget: float | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Value of each prompt, price of each teacher's quota (0 uncapped) and of money."""
    # linprog minimises -gain, so its marginals are the negated prices.
    limits = -result.ineqlin.marginals
    teacher_price = np.zeros(len(caps))
    capped = np.flatnonzero(np.isfinite(caps))
    teacher_price[capped] = limits[: len(capped)]
    money_price = float(limits[-1]) if budget is not None else 0.0
    return -result.eqlin.marginals, teacher_price, money_price


def _cheapest_teachers(caps: np.ndarray, cost: np.ndarray, n_prompts: int) -> np.ndarray:
    """The teachers of the cheapest assignment under the quotas: cheapest first, to each cap."""
    order = np.argsort(cost, kind="stable")
    room = np.cumsum(np.minimum(caps[order], n_prompts))
    return order[: np.searchsorted(room, n_prompts) + 1]
