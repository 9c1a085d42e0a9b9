"""The `budget` routing policy at scale: the exact 0/1 program against the relaxations.

    python bench/bench_policies.py [--sizes 2500 5000 10000 20000 57500] [--exact-max 5000]

Random router scores for 20 teachers priced like real ones, two kinds of limits (a budget
alone: Lagrangian bisection; a budget and quotas: the LP relaxation rounded). Prints a
markdown table and replaces its own section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from collections.abc import Callable

import numpy as np
from results_md import replace_section  # bench/ is on sys.path when run as a script

from persyn.config import RoutingPolicyConfig
from persyn.method import choose_teachers
from persyn.policies import EXACT_MAX_VARIABLES, BudgetPolicy

NAME = "bench_policies"
TEACHERS = 20
# Budget as a share of what argmax would spend; quota on each of the three best teachers.
BUDGET_SHARE = 0.5
QUOTA = 0.05
# The exact solver takes about a minute at 5K x 20 on 2 shared cores, several at 10K.
EXACT_MAX_PROMPTS = 5000


def instance(n_prompts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Router scores in [0, 1] and expected cost per prompt for TEACHERS teachers.

    Prices per 1K tokens spread log-uniformly from $0.0001 (small open models) to $0.06
    (frontier APIs) and response lengths from 150 to 800 tokens; the pricier teachers score
    better on average, with per-prompt noise, as in a real pool.
    """
    rng = np.random.default_rng(seed)
    price = np.sort(np.exp(rng.uniform(np.log(1e-4), np.log(6e-2), TEACHERS)))
    cost = price * rng.uniform(150, 800, TEACHERS) / 1000
    quality = 0.4 + 0.1 * np.log10(price / price[0])
    scores = np.clip(quality + 0.2 * rng.normal(size=(n_prompts, TEACHERS)), 0, 1)
    return scores, cost


def limits(scores: np.ndarray, cost: np.ndarray, quotas: bool) -> RoutingPolicyConfig:
    budget = BUDGET_SHARE * float(cost[choose_teachers(scores)].sum())
    best = np.argsort(scores.mean(axis=0))[-3:]
    shares = {f"t{i}": QUOTA for i in best} if quotas else {}
    return RoutingPolicyConfig(kind="budget", budget=budget, max_share=shares)


def timed(
    solve: Callable[[np.ndarray], np.ndarray], scores: np.ndarray
) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    choice = solve(scores)
    return choice, time.perf_counter() - started


def measure(n_prompts: int, quotas: bool, exact_max: int) -> list[str]:
    scores, cost = instance(n_prompts, seed=n_prompts)
    cfg = limits(scores, cost, quotas)
    policy = BudgetPolicy(cfg, [f"t{i}" for i in range(TEACHERS)], cost)
    relaxed, relaxed_s = timed(policy.relaxed, scores)
    rows = np.arange(n_prompts)
    spent = cost[relaxed].sum() / cfg.budget
    exact_s = gap = "not run"
    if n_prompts <= exact_max:
        exact, seconds = timed(policy.exact, scores)
        best = scores[rows, exact].sum()
        exact_s = f"{seconds:.2f}"
        gap = f"{100 * (best - scores[rows, relaxed].sum()) / best:.5f}"
    kind = "budget + quotas (LP, rounded)" if quotas else "budget (Lagrangian bisection)"
    return [kind, f"{n_prompts:,}", exact_s, f"{relaxed_s:.2f}", gap, f"{100 * spent:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000, 20000, 57500])
    parser.add_argument(
        "--exact-max",
        type=int,
        default=EXACT_MAX_PROMPTS,
        help="largest prompt count the exact solver runs on",
    )
    args = parser.parse_args()
    headers = [
        "limits",
        "routed prompts",
        "exact s",
        "relaxed s",
        "gap, % of exact total score",
        "budget used %",
    ]
    load_before = os.getloadavg()[0]
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    for quotas in (False, True):
        for n_prompts in args.sizes:
            row = measure(n_prompts, quotas, args.exact_max)
            print(" | ".join(row), flush=True)
            lines.append("| " + " | ".join(row) + " |")

    command = "python bench/bench_policies.py"
    if args.sizes != parser.get_default("sizes") or args.exact_max != EXACT_MAX_PROMPTS:
        command += f" --sizes {' '.join(map(str, args.sizes))} --exact-max {args.exact_max}"
    markdown = (
        f"Command: `{command}`  \n"
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, shared with other jobs "
        f"(load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        "timings are one run each)  \n"
        f"Date: {datetime.date.today().isoformat()}  \n"
        f"Instances: {TEACHERS} teachers, random router scores in [0, 1], prices per 1K tokens "
        "log-uniform over $0.0001-0.06 times 150-800 response tokens (pricier teachers "
        f"better on average); budget {BUDGET_SHARE:.0%} of argmax's cost; quotas "
        f"{QUOTA:.0%} on each of the three best teachers.\n\n"
        + "\n".join(lines)
        + f"\n\n`choose` solves exactly up to {EXACT_MAX_VARIABLES:,} prompt x teacher pairs "
        "and with the relaxation above. The gap is the exact solver's total router score less "
        "the relaxation's, in % of the exact total; HiGHS stops the exact solver at a 0.01% "
        "optimality gap, so it can come out slightly negative.\n"
    )
    print(markdown)
    replace_section(NAME, markdown)


if __name__ == "__main__":
    main()
