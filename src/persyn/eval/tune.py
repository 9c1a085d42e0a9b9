"""`persyn tune` and `rewards.alpha: auto`: which reward setting teaches THIS student best?

For each setting of the grid (`tune.alphas` x `tune.learnability_signals`, the paper's
alpha 0.4 always among them as the reference):

1. a pilot dataset: every drawn calibration prompt answered by the teacher the run's
   router and routing policy choose for it under that setting's reward
   (`tune.pilot_answers: routed`, cross-fitted: the router that routes a prompt was
   trained on the other folds, `routed_choice`), or by its oracle teacher (`oracle`,
   `persyn.method.oracle_choice` through `combined_reward`). The routed data is what the
   run will train on; the oracle's is not: a router trained at another alpha can send
   prompts elsewhere than their best answers. Every teacher answered every calibration
   prompt, so no new generation is needed; a signal other than the run's scores those
   answers once more with the student;
2. a pilot student per training seed, trained with the run's `student_training` recipe
   for `tune.max_steps` steps (`persyn.eval.trained`: students and evaluations are cached
   by fingerprint, so a killed tune resumes and two settings that pick the same
   answers share a student);
3. evaluated on `tune.validation`, prompts checked disjoint (normalised text) from every
   prompt of the run and from `evaluation.prompts` (the final evaluation set);
4. the choice (`choose_setting`): the best mean score, unless the paired bootstrap
   interval of its difference from the reference includes 0: a tie keeps the paper's
   setting, and the reason says so.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from persyn.artifacts import Provenance, TuneFiles, dataset_row
from persyn.config import (
    PAPER_ALPHA,
    PAPER_SIGNAL,
    ConfigError,
    LearnabilitySignalConfig,
    RunConfig,
    fingerprint,
)
from persyn.data import load_prompts
from persyn.eval.stats import Interval, paired_bootstrap
from persyn.eval.student import check_held_out
from persyn.eval.trained import train_and_evaluate
from persyn.fingerprints import pilot_fallback, router_section, routing_policy
from persyn.method import any_ordered_pair, failure_reward
from persyn.progress import log
from persyn.router.encoder import PromptEncoder
from persyn.router.metrics import best_fixed_teacher
from persyn.router.routers import make_router
from persyn.stages.common import generating_columns, teacher_fingerprint, trained_text
from persyn.stages.fallback import chain_order
from persyn.stages.routing import policy_choice
from persyn.stages.score import combined_reward, failed_answers, reward_table, score_responses
from persyn.store import write_jsonl
from persyn.teachers.base import Prompt

if TYPE_CHECKING:
    from pathlib import Path

    from persyn.artifacts import RewardTable
    from persyn.run import Run


@dataclass(frozen=True)
class Setting:
    """One reward setting of the grid."""

    alpha: float
    signal: str

    @property
    def name(self) -> str:
        return f"alpha{self.alpha:g}-{self.signal}"


def tune_settings(cfg: RunConfig) -> tuple[list[Setting], Setting]:
    """(the grid, the reference): every alpha with every signal; the reference is the
    paper's alpha with the paper's signal (or the first signal tried when that is not
    among them), added to the grid when missing."""
    signals = cfg.tune.learnability_signals or [cfg.rewards.learnability.name]
    grid = [Setting(a, s) for s in signals for a in cfg.tune.alphas]
    reference = Setting(PAPER_ALPHA, PAPER_SIGNAL if PAPER_SIGNAL in signals else signals[0])
    return ([reference] if reference not in grid else []) + grid, reference


def setting_config(cfg: RunConfig, setting: Setting) -> RunConfig:
    """`cfg` with the setting's alpha and learnability signal (the run's own signal keeps
    its options)."""
    signal = cfg.rewards.learnability
    if signal.name != setting.signal:
        signal = LearnabilitySignalConfig(name=setting.signal)
    rewards = cfg.rewards.model_copy(update={"alpha": setting.alpha, "learnability": signal})
    return cfg.model_copy(update={"rewards": rewards})


def pilot_config(cfg: RunConfig) -> RunConfig:
    """The run's SFT recipe at the pilot budget (`tune.max_steps`), evaluated without
    lm-eval tasks (the choice rests on the validation prompts alone)."""
    training = cfg.student_training
    sft = {**training.sft, "max_steps": cfg.tune.max_steps}
    evaluation = cfg.evaluation.model_copy(update={"lm_eval_tasks": []})
    return cfg.model_copy(
        update={
            "student_training": training.model_copy(update={"sft": sft}),
            "evaluation": evaluation,
        }
    )


def pilot_ids(run: Run) -> list[str]:
    """The calibration prompts the pilot students train on: all, or a seeded draw of
    `tune.max_rows` (the same for every setting)."""
    ids = run.store.split().calibration
    size = run.cfg.tune.max_rows
    if size is None or size >= len(ids):
        return ids
    return sorted(random.Random(f"persyn-tune:{run.cfg.tune.seed}").sample(ids, size))


def validation_prompts(cfg: RunConfig, run_prompts: list[Prompt]) -> list[Prompt]:
    """`tune.validation`, checked disjoint from the run's prompts and the final evaluation
    set (a one-line ConfigError naming the overlap)."""
    if cfg.tune.validation is None:
        raise ConfigError(
            "tune.validation: not set; name prompts to score the pilot students on (a file, "
            "or a built-in set with another seed), disjoint from the run's prompts and from "
            "evaluation.prompts"
        )
    prompts = load_prompts(cfg.tune.validation)
    check_held_out(prompts, run_prompts, where="tune.validation", other="run")
    if cfg.evaluation.prompts is not None:
        final = load_prompts(cfg.evaluation.prompts)
        check_held_out(prompts, final, where="tune.validation", other="evaluation.prompts")
    return prompts


def validation_fingerprint(cfg: RunConfig, validation: list[Prompt]) -> str:
    """What a pilot's evaluation is stored under beside its student's key: the evaluation
    settings and the validation prompts."""
    return fingerprint(cfg.evaluation, [p.to_row() for p in validation])


def pilot_dataset(files: TuneFiles, cfg: RunConfig, setting: Setting) -> Path:
    """Where a setting's pilot dataset is written: under a key of how its answers are
    picked (`tune.pilot_answers`; for `routed`, the router, the routing policy without
    the uncovered-prompt policy, which pilots do not follow, the folds and their seed,
    and the fallback's length, `pilot_fallback`), so a dataset picked another way is
    never taken for this one's."""
    tune = cfg.tune
    how: Any = tune.pilot_answers
    if how == "routed":
        how = [how, router_section(cfg), *routing_policy(cfg), tune.pilot_folds, tune.seed]
        how += pilot_fallback(cfg)
    return files.dataset(f"{tune.pilot_answers}-{fingerprint(how)[:12]}/{setting.name}")


def pilot_rows(
    run: Run, setting: Setting, ids: list[str], encoder: PromptEncoder | None = None
) -> list[dict[str, Any]]:
    """Each prompt of `ids` answered by its teacher under `setting`'s reward, in the
    export's row format. `routed` pilots (`tune.pilot_answers`) take the routed teacher's
    answer or, where it failed, the next of the prompt's fallback chain as `generate`
    does (`chain_order`: `routing.fallback_tries`); `oracle` pilots the best answer that
    did not fail. Prompts without a usable answer are left out. Scores not cached yet (a
    signal other than the run's) are computed and cached in the run's score logs;
    `encoder`: the encoder routers' frozen encoder, shared by every setting."""
    cfg = setting_config(run.cfg, setting)
    scored = dataclasses.replace(run, cfg=cfg)
    failed = failed_answers(run, ids)
    names = cfg.teacher_names
    if cfg.tune.pilot_answers == "routed":
        calibration = run.store.split().calibration
        learn, qual, _ = score_responses(scored, calibration, retry_failed=False)
        table = reward_table(scored, calibration, learn, qual)
        routed, router_scores = routed_choice(scored, table, encoder)
        at = {pid: i for i, pid in enumerate(calibration)}
        chains = [
            chain_order(
                cfg,
                {
                    "teacher": names[routed[at[pid]]],
                    "router_scores": dict(zip(names, router_scores[at[pid]], strict=True)),
                },
            )
            for pid in ids
        ]
    else:
        learn, qual, _ = score_responses(scored, ids, retry_failed=False)
        oracle = combined_reward(cfg, learn, qual, failed=failed)[1].tolist()
        chains = [[names[j]] if j >= 0 else [] for j in oracle]
    by_id = run.prompts_by_id()
    rows = []
    for i, (pid, chain) in enumerate(zip(ids, chains, strict=True)):
        j = next((names.index(t) for t in chain if not failed[i, names.index(t)]), -1)
        if j < 0:
            continue
        teacher = cfg.teachers[j]
        gen = run.store.generation_log(teacher.name).get((pid, teacher_fingerprint(teacher)))
        if gen is None:
            continue
        provenance = Provenance.of_answer(teacher, gen)
        answer = trained_text(gen, teacher)
        rows.append(dataset_row(by_id[pid], answer, teacher.name, "tune", provenance))
    return rows


def fold_of(ids: list[str], folds: int, seed: int) -> np.ndarray:
    """[prompts] the fold (0 .. folds - 1) of each of `ids`: a seeded shuffle dealt round
    robin, so the folds differ in size by at most one."""
    order = list(range(len(ids)))
    random.Random(f"persyn-tune-folds:{seed}").shuffle(order)
    fold = np.empty(len(ids), dtype=int)
    fold[order] = np.arange(len(ids)) % folds
    return fold


def routed_choice(
    run: Run, table: RewardTable, encoder: PromptEncoder | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """([prompts of `table`] the pool index of the teacher the run's routing policy picks
    for each calibration prompt, [prompts, teachers] the router scores it picked from):
    scores of a router (`run.cfg.router`) trained on the rewards of `table` (the
    setting's) of the other `tune.pilot_folds` folds, so every prompt is routed by a
    router that never saw it, as the run routes its prompts. Encoder routers share one
    frozen `encoder` (and its memo of encoded prompts) across folds and settings. A router
    fit per fold (seconds for the encoder routers; the LM router trains its backbone each
    time). Where the other folds hold no pair of answers with different rewards (nothing
    to learn; `train-router` refuses such a calibration set), their best teacher on mean
    reward routes the fold (score 1, the others 0)."""
    cfg = run.cfg
    by_id = run.prompts_by_id()
    texts = np.array([by_id[pid].text for pid in table.ids], dtype=object)
    fold = fold_of(table.ids, min(cfg.tune.pilot_folds, len(table.ids)), cfg.tune.seed)
    charge = failure_reward(cfg.rewards.normalization, len(cfg.teachers))
    encoder = encoder or PromptEncoder(cfg.router.backbone, cfg.router.embed_batch_size)
    scores = np.zeros((len(table.ids), len(cfg.teachers)))
    for k in range(int(fold.max()) + 1 if len(fold) else 0):
        held = fold == k
        reward = table.routing_reward[~held]
        if cfg.router.kind != "random" and not any_ordered_pair(reward, cfg.router.tie_margin):
            scores[held, best_fixed_teacher(reward, charge, generating_columns(cfg) or None)] = 1.0
            log(f"tune: fold {k + 1}: no reward pair to learn from; the best teacher routes it")
            continue
        router = make_router(cfg.router, cfg.teacher_names, encoder)
        router.fit(list(texts[~held]), reward, failure_reward=charge)
        scores[held] = router.scores(list(texts[held]))
    able, _, local = policy_choice(run, table.ids, scores)
    return np.array(able, dtype=int)[local], scores


@dataclass
class TuneResult:
    """Per setting its result row (`persyn.eval.trained`'s, plus the intervals), the
    reference and the choice with its reason."""

    rows: list[dict[str, Any]]
    reference: Setting
    chosen: Setting
    reason: str

    def choice(self) -> dict[str, Any]:
        """What `choice.json` holds and the run records (summary, card, report)."""
        return {
            "alpha": self.chosen.alpha,
            "learnability": self.chosen.signal,
            "setting": self.chosen.name,
            "reference": self.reference.name,
            "kept_reference": self.chosen == self.reference,
            "reason": self.reason,
            "settings": [r["setting"] for r in self.rows],
        }


def run_tune(run: Run, files: TuneFiles) -> TuneResult:
    """Every step above, for the run's finished calibration; writes the pilot datasets,
    students and evaluations under `files` (the table and choice: `persyn.eval.tune_report`)."""
    cfg = pilot_config(run.cfg)
    validation = validation_prompts(cfg, run.prompts)
    settings, reference = tune_settings(cfg)
    ids = pilot_ids(run)
    eval_fp = validation_fingerprint(cfg, validation)
    rows, scores = [], {}
    tasks = np.array([], dtype=str)
    encoder = PromptEncoder(cfg.router.backbone, cfg.router.embed_batch_size)  # loads on use
    for setting in settings:
        path = pilot_dataset(files, cfg, setting)
        write_jsonl(path, pilot_rows(run, setting, ids, encoder))
        log(f"tune: {setting.name}: pilot student(s) on {path.name}")
        row, scores[setting.name], tasks = train_and_evaluate(
            cfg,
            setting.name,
            path,
            validation,
            eval_fp,
            files.folder,
            run.executor,
            seeds=cfg.tune.seeds,
            stage="tune",
        )
        rows.append(
            {"setting": setting.name, "alpha": setting.alpha, "signal": setting.signal, **row}
        )
    scored = tasks != ""
    if not scored.any():
        raise ConfigError(
            "tune.validation: no prompt has a verifier (math or instruction following): the "
            "pilot students cannot be scored"
        )
    own, diffs = paired_bootstrap(
        {name: s[..., scored] for name, s in scores.items()},
        tasks[scored],
        reference.name,
        resamples=cfg.tune.bootstrap_resamples,
        seed=cfg.tune.seed,
        level=cfg.tune.confidence,
    )
    for row in rows:
        name = row["setting"]
        d = diffs[name]
        row.update(score_low=own[name].low, score_high=own[name].high)
        row.update(vs_reference=d.estimate, vs_reference_low=d.low, vs_reference_high=d.high)
    means = {r["setting"]: own[r["setting"]].estimate for r in rows}
    best, reason = choose_setting(means, diffs, reference.name, cfg.tune.confidence)
    chosen = next(s for s in settings if s.name == best)
    for row in rows:
        row["chosen"] = row["setting"] == best
    return TuneResult(rows, reference, chosen, reason)


def choose_setting(
    means: dict[str, float], diffs: dict[str, Interval], reference: str, level: float = 0.95
) -> tuple[str, str]:
    """(the chosen setting, why): the best mean score, when the interval of its difference
    from `reference` lies above 0; otherwise (a tie within the interval, or no score) the
    reference. Equal means prefer the reference."""
    known = {name: m for name, m in means.items() if not math.isnan(m)}
    ref = known.get(reference)
    if ref is None:
        return reference, f"{reference} has no validation score: the paper's setting is kept"
    best = max(known, key=lambda name: (known[name], name == reference))
    if best == reference:
        return reference, f"no setting scored above {reference} (the paper's setting, {ref:.3f})"
    d = diffs[best]
    interval = f"{level:.0%} interval [{d.low:+.3f}, {d.high:+.3f}]"
    if d.low <= 0:
        return reference, (
            f"{best} scored {known[best]:.3f} against {ref:.3f} for {reference}, but the "
            f"{interval} of the difference includes 0: a tie, so the paper's setting "
            f"{reference} is kept"
        )
    return best, (
        f"{best} scored {known[best]:.3f} against {ref:.3f} for {reference} (the paper's "
        f"setting); the {interval} of the difference lies above 0"
    )
