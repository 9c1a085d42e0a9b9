"""The dataset card: `dataset/README.md` beside the exported `datasets` folder.

YAML front matter in the Hugging Face Hub's card format (task, tags, size, a `configs`
entry matching the layout `Dataset.push_to_hub` writes, and a `persyn` block with the
provenance), then Markdown: teacher shares, reward statistics, router quality, the
resolved config (secrets redacted) and how to publish it.
"""

from __future__ import annotations

import datetime as dt
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from persyn.artifacts import RewardTable, RunArtifacts
from persyn.config import RunConfig, fingerprint
from persyn.redact import redact
from persyn.report.spend import HEADERS as SPEND_HEADERS
from persyn.report.spend import spend_line, spend_table
from persyn.report.truncation import HEADERS, truncation_table
from persyn.store import atomic_write_text

PAPER = "https://arxiv.org/abs/2510.10925"


def reward_statistics(rewards: RewardTable) -> dict[str, dict[str, Any]]:
    """Per teacher over the calibration prompts: mean/std of raw learnability, raw quality
    and combined reward, and the share of prompts where the teacher is the oracle's choice."""
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(rewards.teachers):
        stats: dict[str, Any] = {}
        for kind in ("learnability", "quality", "reward"):
            column = getattr(rewards, kind)[:, j]
            values = column[~np.isnan(column)]
            stats[f"{kind}_mean"] = round(float(values.mean()), 4) if len(values) else None
            stats[f"{kind}_std"] = round(float(values.std()), 4) if len(values) else None
        stats["oracle_share"] = round(rewards.oracle.count(name) / max(len(rewards.ids), 1), 4)
        out[name] = stats
    return out


def _size_category(rows: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if rows < limit:
            return label
    return "n>1M"


def _fenced(text: str, info: str) -> str:
    # A fence longer than any backtick run inside, so config text cannot close it early.
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def persyn_version() -> str:
    try:
        return metadata.version("persyn")
    except metadata.PackageNotFoundError:
        return "unknown"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def coverage_section(coverage: dict[str, Any] | None) -> str:
    """Markdown: what each quality signal scored, the prompt kinds it covered, and a warning
    for kinds no signal applied to (their teachers were ranked on learnability alone)."""
    if coverage is None:
        return "Not recorded for this run (it was scored before persyn recorded coverage)."
    signal_rows = "\n".join(
        f"| {label} | {c['prompts']} | {c['answers']} | {c['failed_answers']} |"
        for label, c in coverage["signals"].items()
    )
    kind_rows = "\n".join(
        f"| {kind} | {c['prompts']} | {c['covered']} |" for kind, c in coverage["kinds"].items()
    )
    warnings = "".join(
        f"\n\n**No quality signal applied to the {coverage['kinds'][kind]['prompts']} "
        f"calibration prompts of kind `{kind}`: their teachers were ranked on the student's "
        "learnability alone.**"
        for kind in coverage["learnability_only_kinds"]
    )
    return f"""| quality signal | prompts scored | answers scored | answers it could not score |
|---|---|---|---|
{signal_rows}

| prompt kind | calibration prompts | with a quality signal |
|---|---|---|
{kind_rows}{warnings}"""


def truncation_section(cfg: RunConfig, summary: dict[str, Any]) -> str:
    """Markdown: per teacher, its answers cut at max_new_tokens and the calibration answers
    longer than the student reads."""
    rows = truncation_table(cfg, summary)
    if rows is None:
        return "Not recorded for this run (it was exported before persyn counted truncation)."
    lines = [HEADERS, ["---"] * len(HEADERS), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def spend_section(summary: dict[str, Any]) -> str:
    """Markdown: the total and cap, and requests, tokens and money per teacher per stage."""
    rows = spend_table(summary)
    if rows is None:
        return spend_line(summary)
    lines = [SPEND_HEADERS, ["---"] * len(SPEND_HEADERS), *rows]
    return spend_line(summary) + "\n\n" + "\n".join("| " + " | ".join(c) + " |" for c in lines)


def build_card(cfg: RunConfig, summary: dict[str, Any], rewards: RewardTable) -> str:
    names = cfg.teacher_names
    stats = reward_statistics(rewards)
    config = redact(cfg.model_dump(mode="json"))
    held = summary.get("router_test") or {}
    provenance = {
        "generator": f"persyn {persyn_version()}",
        "method": f"PerSyn, Route then Generate ({PAPER})",
        "run": cfg.name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config_fingerprint": fingerprint(config),
        "student": cfg.student.model,
        "teachers": [
            {"name": t.name, "backend": t.backend, "model": t.model, "family": t.family}
            for t in cfg.teachers
        ],
        "prompts": cfg.prompts.source or f"builtin:{cfg.prompts.builtin}",
        "alpha": cfg.rewards.alpha,
        "normalization": cfg.rewards.normalization,
        "quality_signals": [q.kind for q in cfg.rewards.quality],
        "learnability_only_kinds": (summary.get("quality_coverage") or {}).get(
            "learnability_only_kinds"
        ),
        "calibration_prompts": summary["calibration_prompts"],
        "routed_prompts": summary["routed_prompts"],
        "generations": summary["generations"],
        "generate_then_select_generations": summary["generate_then_select_generations"],
        "router_test_top1": held.get("top1"),
    }
    front = {
        "license": "other",
        "pretty_name": cfg.name,
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "distillation", "persyn", "multi-teacher"],
        "size_categories": [_size_category(summary["dataset_rows"])],
        # The layout `Dataset.push_to_hub` writes, so the Hub viewer finds the data.
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
        ],
        # the card is meant for the Hub: e.g. a model or source URL may carry a key
        "persyn": redact(provenance),
    }
    teacher_rows = "\n".join(
        f"| {t} | {_percent(summary['dataset_share'][t])} | {_percent(summary['oracle_share'][t])}"
        f" | {_percent(summary['router_share'][t])} | {summary['completion_tokens'][t]}"
        f" | {summary['cost'][t]:.4f} |"
        for t in names
    )
    reward_rows = "\n".join(
        f"| {t} | {_number(s['learnability_mean'])} ± {_number(s['learnability_std'])}"
        f" | {_number(s['quality_mean'])} | {_number(s['reward_mean'])}"
        f" ± {_number(s['reward_std'])} |"
        for t, s in stats.items()
    )
    router_line = (
        f"On its test split, {int(held['prompts'])} calibration prompts used neither to train "
        "the router nor to pick its epoch, the router picks an "
        f"oracle-best teacher for {held['top1']:.1%} of prompts (top-3: {held['hit3']:.1%}); "
        f"mean combined reward {held['reward']:.3f} against {held['best_fixed_reward']:.3f} "
        f"for the best single teacher on those prompts, {held['random_reward']:.3f} at random and "
        f"{held['oracle_reward']:.3f} for the oracle."
        if held
        else "No test split (router.test_fraction 0): the router was not evaluated."
    )
    body = f"""# {cfg.name}

Personalized distillation data for the student `{cfg.student.model}`, built with
[persyn]({PAPER}) (PerSyn, *Route then Generate*): every teacher answered
{summary["calibration_prompts"]} calibration prompts, each answer was scored for quality and
for learnability (the student's mean token log-likelihood), and a Bradley-Terry router
trained on those rewards chose one teacher for each of the other
{summary["routed_prompts"]} prompts; only that teacher generated, or, where its answer
failed, the router's next best ({summary["fallback_rows"]} rows). Each calibration row
keeps the oracle's choice (`selected_by: oracle`), each routed row the router's
(`selected_by: router`).

- rows: {summary["dataset_rows"]} (failed, left out: {summary["failed_rows"]})
- generations: {summary["generations"]} against {summary["generate_then_select_generations"]}
  for Generate then Select on the same prompts
- rewards: r = (1 - alpha) * quality + alpha * learnability, alpha = {cfg.rewards.alpha},
  normalised within each prompt ({cfg.rewards.normalization}); quality signals:
  {", ".join(q.kind for q in cfg.rewards.quality)}

## Teachers

| teacher | dataset share | oracle share (calibration) | router share (routed) | tokens | cost |
|---|---|---|---|---|---|
{teacher_rows}

## Spend

{spend_section(summary)}

## Reward statistics (calibration prompts)

Raw learnability (mean token log-probability) and quality before normalisation; the
combined reward after normalisation and mixing.

| teacher | learnability | quality | combined reward |
|---|---|---|---|
{reward_rows}

## Quality coverage (calibration prompts)

{coverage_section(summary.get("quality_coverage"))}

## Truncated answers

An answer cut at its teacher's `max_new_tokens` may end mid-sentence: it counts as a
failed answer (it loses to every other answer of its prompt and is left out of this
dataset) unless the teacher keeps such answers (`generation.keep_truncated`). An answer
longer than `student.max_length` with its prompt is scored on the part the student reads.

{truncation_section(cfg, summary)}

## Router

{router_line}

## Fields

- `id`: prompt id; `messages`: chat messages, the last one the teacher's answer
- `teacher`: the teacher that wrote the answer; `selected_by`: `oracle` or `router`
- `kind`: `math` or `instruction`; `reference`: reference answer where known
- `router_scores`: the router's score per teacher (routed rows; a struct keyed by teacher)
- `rewards`: learnability, quality and combined reward per teacher (calibration rows)
- `provenance`: where the answer comes from: `teacher_model` (the model id that answered),
  `generation_settings` (hash of the teacher's generation settings), `router` (fingerprint
  of the router that chose the teacher; null for the oracle's rows), `persyn_version`,
  `imported` with `source` and `source_row` (answers read from a data set: mind its
  licence), `fallback_from` (teachers whose answer failed before this one), `novelty`
  (routed rows: distance to the nearest calibration prompts; higher is less like them)
  and `confidence` (the router's top-1 win probability over the runner-up)

## Publishing

```python
import datasets
from huggingface_hub import DatasetCard

datasets.load_from_disk("dataset").push_to_hub("USER/NAME")
DatasetCard.load("dataset/README.md").push_to_hub("USER/NAME")
```

The licence is `other`: the answers inherit the terms of the teachers that wrote them and
the prompts the terms of their source; check both before publishing.

## Config

{_fenced(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), "yaml")}
"""
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n{body}"


def write_dataset_card(store: RunArtifacts, cfg: RunConfig, summary: dict[str, Any]) -> Path:
    """Write the card beside the `datasets` folder from the summary and the rewards."""
    path = store.card_path()
    atomic_write_text(path, build_card(cfg, summary, store.rewards()))
    return path
