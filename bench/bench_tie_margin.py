"""How `rewards.tie_margin_learnability` maps onto `rank_surprisal_ratio`'s units.

The margin is configured in `mean_logprob` units (nats per token); each learnability
signal scales it to its own (`LearnabilitySignal.tie_margin_scale`). For -RSR the scale is
the ratio of a typical within-prompt spread of -RSR to that of mean_logprob, measured here
on the same answers scored with both signals: the replication runs under `rewards.alpha:
auto`, whose tune rescored the calibration answers with `rank_surprisal_ratio`.

Spread: the median absolute difference between two teachers' scores of one prompt, over
every teacher pair of every prompt both signals scored (a robust statistic: a few
degenerate answers with a huge -RSR do not move it). The scale is the geometric mean of
the two tasks' ratios, so each task weighs the same whatever its teacher count.

    PYTHONPATH=src python bench/bench_tie_margin.py   # seconds: reads committed score logs
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_md import replace_section

from persyn.artifacts import RunArtifacts

REPLICATION = Path(__file__).parent / "replication"
TASKS = ("arith", "instruct")
RUN = "run-alphaauto"  # the tuned run: its tune scored the answers with both signals
SIGNALS = ("mean_logprob", "rank_surprisal_ratio")


def scores(path: Path) -> dict[str, list[dict[str, float]]]:
    """Per prompt, per answer both signals scored (without error): {signal: value}."""
    answers: dict[tuple[str, str, str], dict[str, float]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["error"] is None and row["signal"] in SIGNALS:
            key = (row["prompt_id"], row["teacher"], row["input_fp"])
            answers.setdefault(key, {})[row["signal"]] = row["learnability"]
    prompts: dict[str, list[dict[str, float]]] = {}
    for (pid, _, _), values in answers.items():
        if len(values) == len(SIGNALS):
            prompts.setdefault(pid, []).append(values)
    return prompts


def pair_gaps(prompts: dict[str, list[dict[str, float]]]) -> dict[str, np.ndarray]:
    """Per signal, |a - b| for every teacher pair (a, b) of every prompt."""
    pairs = [p for answers in prompts.values() for p in itertools.combinations(answers, 2)]
    return {s: np.array([abs(a[s] - b[s]) for a, b in pairs]) for s in SIGNALS}


def main() -> None:
    header = [
        "| task | prompts | teacher pairs | median gap mean_logprob | median gap -RSR | ratio "
        "| ratio at the 25th percentile | median of per-pair ratios |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines, ratios = [], []
    for task in TASKS:
        prompts = scores(RunArtifacts(REPLICATION / task / RUN).score_path("learnability"))
        gaps = pair_gaps(prompts)
        mlp, rsr = gaps["mean_logprob"], gaps["rank_surprisal_ratio"]
        ratio = float(np.median(rsr) / np.median(mlp))
        ratios.append(ratio)
        low = float(np.quantile(rsr, 0.25) / np.quantile(mlp, 0.25))
        per_pair = float(np.median(rsr[mlp > 0] / mlp[mlp > 0]))
        lines.append(
            f"| {task} | {len(prompts)} | {len(mlp)} | {np.median(mlp):.4f} | "
            f"{np.median(rsr):.4f} | {ratio:.2f} | {low:.2f} | {per_pair:.2f} |"
        )
    scale = math.exp(np.mean(np.log(ratios)))
    table = "\n".join(header + lines)
    print(table)
    print(f"\ntie_margin_scale of rank_surprisal_ratio: {scale:.2f} (geometric mean of the ratios)")
    replace_section(
        "bench_tie_margin: the learnability tie margin in -RSR units (issue 25)",
        f"""`PYTHONPATH=src python bench/bench_tie_margin.py` (reads the committed learnability
score logs of `bench/replication/{{arith,instruct}}/{RUN}`; no model, any machine: run on the
2-core CPU box). Data: the answers of the replication's tuned runs
(student: SmolLM2-135M-Instruct, the packaged Q4_1 GGUF) that the tune scored with both
`mean_logprob` and `rank_surprisal_ratio`: every teacher's answer to each of the 150
calibration prompts per task (arith: 4 teachers, instruct: 3). Gap: |a - b| between two
teachers' scores of one prompt; ratio: median -RSR gap / median mean_logprob gap.

{table}

Scale of `rank_surprisal_ratio` (`tie_margin_scale`): geometric mean of the two tasks'
ratios, **{scale:.2f}**, rounded to {round(scale, 1)} in the class: the default margin
0.01 nats per token is a tie margin of {0.01 * round(scale, 1):.3f} in -RSR. The ratio
differs between tasks (and is lower among the closest pairs on arith), so it is a typical
conversion, not an exact one.""",
    )


if __name__ == "__main__":
    main()
