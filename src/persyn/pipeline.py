"""The stages of Route-then-Generate, each a plain function over a `Run`:

    prepare -> calibrate -> score -> train_router -> route -> generate -> export

Every stage reads and writes artifacts in the run directory (see `persyn.store`). Model
calls are cached row by row under a fingerprint of exactly the config they depend on, so
a rerun computes only what is missing or what a config change made stale: a new alpha
re-mixes the cached scores; a changed teacher regenerates only that teacher's rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from persyn.calibration_select import select_calibration
from persyn.config import RunConfig, TeacherConfig, fingerprint
from persyn.data import load_prompts
from persyn.executors import EXECUTORS, Executor
from persyn.models import check_model_exists
from persyn.progress import bar, log
from persyn.rewards.mix import combine, oracle_choice
from persyn.rewards.quality import combined_quality, quality_signal
from persyn.store import (
    RowLog,
    RunStore,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    write_jsonl,
)
from persyn.teachers.base import Generation, Prompt, backend_class

STAGES = ["prepare", "calibrate", "score", "train-router", "route", "generate", "export"]


class StageError(RuntimeError):
    """A stage could not finish; everything computed so far is kept in the run directory."""


@dataclass
class Run:
    cfg: RunConfig
    store: RunStore
    executor: Executor
    _prompts: list[Prompt] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, cfg: RunConfig, run_dir: str | None = None) -> Run:
        store = RunStore(run_dir or cfg.run_dir)
        executor = make_executor(cfg)
        return cls(cfg, store, executor)

    # -- cached artifacts -----------------------------------------------------------
    @property
    def prompts(self) -> list[Prompt]:
        if self._prompts is None:
            self._prompts = [
                Prompt.from_row(r) for r in read_jsonl(self.store.path("prompts.jsonl"))
            ]
        return self._prompts

    def prompts_by_id(self) -> dict[str, Prompt]:
        return {p.id: p for p in self.prompts}

    def split(self) -> dict[str, list[str]]:
        import json

        return json.loads(self.store.path("calibration.json").read_text())

    def generation_log(self, teacher: str) -> RowLog:
        return RowLog(self.store.path("generations", f"{teacher}.jsonl"), ("prompt_id", "fp"))


def make_executor(cfg: RunConfig) -> Executor:
    if cfg.executor.kind == "ray":
        from persyn.executors_ray import RayExecutor

        return RayExecutor(cfg.executor)
    return EXECUTORS[cfg.executor.kind]()


def teacher_fingerprint(t: TeacherConfig) -> str:
    """What decides a teacher's output: not its cost, family, batch size or runtime options."""
    runtime = set(backend_class(t.backend).runtime_options)
    options = {k: v for k, v in t.options.items() if k not in runtime}
    return fingerprint(
        t.model_dump(exclude={"family", "cost_per_1k_tokens", "batch_size", "options"}), options
    )


def validate(cfg: RunConfig) -> None:
    """Checks that need no model: backends importable, local model paths present."""
    check_model_exists(cfg.student, "student")
    for i, t in enumerate(cfg.teachers):
        # Constructing a teacher loads nothing; it checks the backend's options (and keys).
        backend_class(t.backend)(t)
        if t.backend in {"hf", "vllm"}:
            check_model_exists(t, f"teachers[{i}]")
    for signal in cfg.rewards.quality:
        quality_signal(signal).check()  # options, judge backend, reward-model path


# -- prepare ----------------------------------------------------------------------------
def prepare(run: Run) -> None:
    """Load and normalise the prompts; draw the calibration set and its router split."""
    cfg = run.cfg
    fp = fingerprint(cfg.prompts, cfg.calibration, cfg.router.val_fraction, cfg.router.seed)
    if run.store.is_done("prepare", fp):
        return
    prompts = load_prompts(cfg.prompts)
    ids = [p.id for p in prompts]
    size = min(cfg.calibration.size, len(ids))
    calibration = select_calibration(cfg.calibration, ids, [p.text for p in prompts])
    shuffled = calibration[:]
    random.Random(cfg.router.seed).shuffle(shuffled)
    n_val = round(len(shuffled) * cfg.router.val_fraction)
    chosen = set(calibration)
    split = {
        "calibration": calibration,
        "router_train": sorted(shuffled[n_val:]),
        "router_val": sorted(shuffled[:n_val]),
        "routed": [i for i in ids if i not in chosen],
    }
    write_jsonl(run.store.path("prompts.jsonl"), (p.to_row() for p in prompts))
    atomic_write_json(run.store.path("calibration.json"), split)
    run._prompts = prompts
    run.store.mark_done("prepare", fp, {"prompts": len(ids), "calibration": size})
    log(f"prepare: {len(ids)} prompts, {size} for calibration")


# -- generation (shared by calibrate and generate) --------------------------------------
def _generate(
    run: Run, teacher: TeacherConfig, prompt_ids: list[str], stage: str
) -> dict[str, int]:
    """Generate the missing rows; error rows are retried on the next run."""
    fp = teacher_fingerprint(teacher)
    rowlog = run.generation_log(teacher.name)
    by_id = run.prompts_by_id()

    def done(pid: str) -> bool:
        row = rowlog.get((pid, fp))
        return row is not None and row["error"] is None

    todo = [by_id[pid] for pid in prompt_ids if not done(pid)]

    def sink(results: list[Generation]) -> None:
        rows = []
        for g in results:
            error = g.error
            if error is None and not g.text.strip():
                error = "empty response"
            rows.append(
                {
                    "prompt_id": g.prompt_id,
                    "teacher": teacher.name,
                    "fp": fp,
                    "text": g.text,
                    "prompt_tokens": g.prompt_tokens,
                    "completion_tokens": g.completion_tokens,
                    "error": error,
                }
            )
        rowlog.append(rows)

    try:
        run.executor.generate(teacher, todo, sink)
    except KeyboardInterrupt:
        raise
    except Exception as err:
        kept = sum(done(pid) for pid in prompt_ids)
        raise StageError(
            f"{stage}: teacher {teacher.name!r} failed: {err} "
            f"({kept}/{len(prompt_ids)} rows are saved; rerun to resume)"
        ) from err
    errors = [rowlog.get((pid, fp)) for pid in prompt_ids if not done(pid)]
    _check_errors(run, stage, f"teacher {teacher.name!r}", errors, len(prompt_ids))
    return {"generated": len(todo), "errors": len(errors)}


def _check_errors(
    run: Run, stage: str, who: str, errors: list[dict[str, Any] | None], total: int
) -> None:
    if not errors:
        return
    rate = len(errors) / max(total, 1)
    first = next((e for e in errors if e), None)
    example = f"; first: {first['prompt_id']}: {first['error']}" if first else ""
    message = f"{stage}: {who}: {len(errors)}/{total} rows failed{example}"
    if rate > run.cfg.max_error_rate:
        raise StageError(
            f"{message} - above max_error_rate {run.cfg.max_error_rate}; finished rows are "
            "kept, fix the cause and rerun"
        )
    log(f"[yellow]{message} (within max_error_rate; counted in the export)")


def calibrate(run: Run) -> None:
    """Every teacher answers every calibration prompt (Generate-then-Select on a small set)."""
    ids = run.split()["calibration"]
    fp = fingerprint([teacher_fingerprint(t) for t in run.cfg.teachers], ids)
    if run.store.is_done("calibrate", fp):
        return
    stats = {t.name: _generate(run, t, ids, "calibrate") for t in run.cfg.teachers}
    run.store.mark_done("calibrate", fp, {"teachers": stats})


# -- score ------------------------------------------------------------------------------
QUALITY_CHUNK = 512  # responses per quality call; each chunk is saved before the next


def _score_fingerprints(cfg: RunConfig) -> tuple[str, str]:
    # How the scores are computed (batching, engine) and the family (it only picks a baseline
    # teacher) change no learnability score.
    return fingerprint(
        cfg.student.model_dump(exclude={"batch_tokens", "family", "scorer"})
    ), fingerprint(cfg.rewards.quality)


def score(run: Run) -> None:
    """Learnability and quality for every calibration response; mix; oracle per prompt."""
    cfg = run.cfg
    ids = run.split()["calibration"]
    student_fp, quality_fp = _score_fingerprints(cfg)
    teacher_fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    fp = fingerprint(student_fp, quality_fp, teacher_fps, ids, cfg.rewards)
    if run.store.is_done("score", fp):
        return
    learn, qual, scored = score_responses(run, ids)
    write_rewards(run, ids, learn, qual)
    missing = int(np.isnan(learn).sum())
    _check_errors(
        run,
        "score",
        "learnability/quality",
        [
            {"prompt_id": ids[i], "error": "missing score"}
            for i, _ in zip(*np.where(np.isnan(learn)), strict=True)
        ],
        learn.size,
    )
    run.store.mark_done("score", fp, {"scored": scored, "missing": missing})


def score_responses(run: Run, ids: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw learnability and quality [prompts, teachers] of every teacher's cached response
    to `ids` (NaN where none), computing only the scores not cached; also the count computed.
    Used on calibration prompts by `score`, and on any prompts by Generate-then-Select."""
    cfg = run.cfg
    student_fp, quality_fp = _score_fingerprints(cfg)
    teacher_fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    by_id = run.prompts_by_id()
    l_log = RowLog(run.store.path("scores", "learnability.jsonl"), ("prompt_id", "teacher", "fp"))
    q_log = RowLog(run.store.path("scores", "quality.jsonl"), ("prompt_id", "teacher", "fp"))
    generations = {t.name: run.generation_log(t.name) for t in cfg.teachers}

    def response(pid: str, teacher: str) -> dict[str, Any] | None:
        row = generations[teacher].get((pid, teacher_fps[teacher]))
        return row if row is not None and row["error"] is None else None

    todo_l, todo_q = [], []
    for pid in ids:
        for t in cfg.teacher_names:
            if response(pid, t) is None:
                continue
            l_key = (pid, t, fingerprint(teacher_fps[t], student_fp))
            if l_key not in l_log:
                todo_l.append(l_key)
            q_key = (pid, t, fingerprint(teacher_fps[t], quality_fp))
            if q_key not in q_log:
                todo_q.append(q_key)

    # Learnability: the student sees the prompt as it is, without the teacher's system prompt.
    pairs = [(by_id[pid].messages, response(pid, t)["text"]) for pid, t, _ in todo_l]

    def l_sink(indices: list[int], scores: list[Any]) -> None:
        rows = []
        for i, s in zip(indices, scores, strict=True):
            pid, t, key_fp = todo_l[i]
            value = s.logprob_mean
            error = s.error or (None if value is None or np.isfinite(value) else "non-finite")
            rows.append(
                # a non-finite value is stored as null: NaN/Infinity are not JSON
                {
                    "prompt_id": pid,
                    "teacher": t,
                    "fp": key_fp,
                    "learnability": None if error == "non-finite" else value,
                    "response_tokens": s.response_tokens,
                    "truncated": s.truncated,
                    "error": error,
                }
            )
        l_log.append(rows)

    run.executor.learnability(cfg.student, pairs, l_sink)

    # In chunks, each saved when done: a judge or reward model over many responses is slow,
    # and a killed run keeps what was scored.
    for start in range(0, len(todo_q), QUALITY_CHUNK):
        chunk = todo_q[start : start + QUALITY_CHUNK]
        samples = [(by_id[pid], response(pid, t)["text"]) for pid, t, _ in chunk]
        qualities = combined_quality(cfg.rewards.quality, samples)
        q_log.append(
            {"prompt_id": pid, "teacher": t, "fp": key_fp, **_finite_quality(q)}
            for (pid, t, key_fp), q in zip(chunk, qualities, strict=True)
        )

    n_t = len(cfg.teachers)
    learn = np.full((len(ids), n_t), np.nan)
    qual = np.full((len(ids), n_t), np.nan)
    for i, pid in enumerate(ids):
        for j, t in enumerate(cfg.teacher_names):
            lrow = l_log.get((pid, t, fingerprint(teacher_fps[t], student_fp)))
            qrow = q_log.get((pid, t, fingerprint(teacher_fps[t], quality_fp)))
            if qrow and qrow.get("error"):
                continue  # a signal applies but could not score: no reward, not a guess
            if lrow and lrow["error"] is None:
                learn[i, j] = lrow["learnability"]
            if qrow and qrow["quality"] is not None:
                qual[i, j] = qrow["quality"]  # none: no signal applies (combine() handles it)
    return learn, qual, len(todo_l)


def _finite_quality(row: dict[str, Any]) -> dict[str, Any]:
    """A quality row with any NaN or infinite value turned into an error (a broken reward
    model must not rank teachers, and NaN/Infinity are not JSON)."""
    bad = sorted(k for k, v in row["signals"].items() if v is not None and not np.isfinite(v))
    if not bad:
        return row
    signals = {k: None if k in bad else v for k, v in row["signals"].items()}
    error = "; ".join(filter(None, [row["error"], f"non-finite quality from {', '.join(bad)}"]))
    return {**row, "quality": None, "signals": signals, "error": error}


def write_rewards(
    run: Run,
    ids: list[str],
    learn: np.ndarray,
    qual: np.ndarray,
    alpha: float | None = None,
    filename: str = "rewards.jsonl",
) -> dict[str, float]:
    """Normalise, mix with alpha (default: the config's) and write `filename` (cheap:
    redone on every alpha); returns each teacher's oracle share."""
    rw = run.cfg.rewards
    alpha = rw.alpha if alpha is None else alpha
    reward = combine(qual, learn, alpha, rw.normalization)
    oracle = oracle_choice(reward)
    names = run.cfg.teacher_names

    def clean(a: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else round(float(v), 6) for v in a]

    rows = [
        {
            "prompt_id": pid,
            "learnability": clean(learn[i]),
            "quality": clean(qual[i]),
            "reward": clean(reward[i]),
            "oracle": names[oracle[i]] if oracle[i] >= 0 else None,
        }
        for i, pid in enumerate(ids)
    ]
    write_jsonl(run.store.path(filename), rows)
    if filename == "rewards.jsonl":
        atomic_write_json(
            run.store.path("rewards_meta.json"),
            {"teachers": names, "alpha": alpha, "normalization": rw.normalization},
        )
    return {t: float(np.mean(oracle == j)) for j, t in enumerate(names)}


def alpha_sweep(run: Run, alphas: list[float]) -> dict[str, dict[str, float]]:
    """Re-mix the cached calibration scores at each alpha: `rewards_alpha{a}.jsonl` per
    alpha and `alpha_sweep.json` with the oracle's share per teacher. Only the mix is
    recomputed: `score` runs first if it is not done, then no model is called."""
    for a in alphas:
        if not 0 <= a <= 1:
            raise StageError(f"--alpha {a}: alpha must be in [0, 1]")
    run_stage(run, "score")
    ids = run.split()["calibration"]
    learn, qual, computed = score_responses(run, ids)
    if computed:
        raise StageError(f"alpha sweep: {computed} scores were missing after `score`")
    shares = {
        f"{a:g}": write_rewards(run, ids, learn, qual, a, f"rewards_alpha{a:g}.jsonl")
        for a in alphas
    }
    atomic_write_json(
        run.store.path("alpha_sweep.json"),
        {"normalization": run.cfg.rewards.normalization, "oracle_share": shares},
    )
    names = run.cfg.teacher_names
    table = [
        f"Oracle share per teacher on {len(ids)} calibration prompts "
        f"({run.cfg.rewards.normalization} normalisation)",
        "",
        "| alpha | " + " | ".join(names) + " |",
        "|---:|" + "---:|" * len(names),
        *(
            f"| {a} | " + " | ".join(f"{row[t]:.0%}" for t in names) + " |"
            for a, row in shares.items()
        ),
    ]
    atomic_write_text(run.store.path("alpha_sweep.md"), "\n".join(table) + "\n")
    return shares


def load_rewards(run: Run, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    rows = {r["prompt_id"]: r for r in read_jsonl(run.store.path("rewards.jsonl"))}
    ids = ids if ids is not None else list(rows)
    reward = np.array(
        [[np.nan if v is None else v for v in rows[i]["reward"]] for i in ids], dtype=float
    ).reshape(len(ids), len(run.cfg.teachers))
    return ids, reward


# -- router -----------------------------------------------------------------------------


def train_router(run: Run) -> dict[str, Any]:
    """Fit the configured router on the train split; metrics on the held-out split."""
    from persyn.router.metrics import routing_metrics
    from persyn.router.routers import make_router

    cfg = run.cfg
    score_marker = run.store.marker("score") or {}
    fp = fingerprint(cfg.router, score_marker.get("fingerprint"))
    if run.store.is_done("train-router", fp):
        return (run.store.marker("train-router") or {})["metrics"]
    split = run.split()
    by_id = run.prompts_by_id()
    train_ids, train_r = load_rewards(run, split["router_train"])
    val_ids, val_r = load_rewards(run, split["router_val"])
    x_train = [by_id[i].text for i in train_ids]
    x_val = [by_id[i].text for i in val_ids]
    router = make_router(cfg.router, cfg.teacher_names)
    epochs = cfg.router.lm.epochs if cfg.router.kind == "lm-bradley-terry" else cfg.router.epochs
    with bar("train router (epochs)", epochs) as progress:
        fit = router.fit(
            x_train,
            train_r,
            x_val or None,
            val_r if x_val else None,
            on_epoch=lambda _losses: progress.advance(),
        )
    metrics: dict[str, Any] = {
        "train": routing_metrics(router.scores(x_train), train_r),
        "pairs": fit["pairs"],
        "best_epoch": fit.get("best_epoch"),
    }
    if len(val_ids):
        metrics["val"] = routing_metrics(router.scores(x_val), val_r)
    router.save(run.store.path("router"))
    # Held-out choices next to the oracle's, for the report's agreement and confusion matrix.
    oracle = {r["prompt_id"]: r["oracle"] for r in read_jsonl(run.store.path("rewards.jsonl"))}
    write_jsonl(
        run.store.path("router", "val_predictions.jsonl"),
        prediction_rows(cfg.teacher_names, val_ids, router.scores(x_val), val_r, oracle),
    )
    atomic_write_json(
        run.store.path("router", "metrics.json"), {**metrics, "history": fit.get("history", [])}
    )
    run.store.mark_done("train-router", fp, {"metrics": metrics})
    held = metrics.get("val", metrics["train"])
    log(
        f"train-router: {fit['pairs']} pairs; held-out top-1 {held['top1']:.2f}, "
        f"pairwise accuracy {held['pairwise_accuracy']:.2f}"
    )
    return metrics


def prediction_rows(
    names: list[str], ids: list[str], scores: np.ndarray, reward: np.ndarray, oracle: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per prompt: the router's choice, the oracle's, and every teacher's score and reward."""
    return [
        {
            "prompt_id": pid,
            "router": names[int(np.argmax(s))],
            "oracle": oracle.get(pid),
            "router_scores": {n: round(float(v), 5) for n, v in zip(names, s, strict=True)},
            "reward": {
                n: None if np.isnan(v) else round(float(v), 6)
                for n, v in zip(names, r, strict=True)
            },
        }
        for pid, s, r in zip(ids, scores, reward, strict=True)
    ]


# -- route ------------------------------------------------------------------------------
def route(run: Run) -> None:
    """One teacher per remaining prompt: the routing policy over the router's scores
    (argmax by default; sampling, or an assignment under a budget: `routing` in the config)."""
    from persyn.policies import cost_per_prompt, make_policy, policy_report
    from persyn.router.routers import Router

    cfg = run.cfg
    marker = run.store.marker("train-router") or {}
    ids = run.split()["routed"]
    costs = [t.cost_per_1k_tokens for t in cfg.teachers]
    fp = fingerprint(marker.get("fingerprint"), ids, cfg.routing, costs)
    if run.store.is_done("route", fp):
        return
    router = Router.load(run.store.path("router"), cfg.teacher_names)
    scores = router_scores(run, router, ids, marker.get("fingerprint"))
    names = cfg.teacher_names
    cost = cost_per_prompt(cfg, mean_response_tokens(run))
    choice = make_policy(cfg.routing, names, cost).choose(scores)
    rows = [
        {
            "prompt_id": pid,
            "teacher": names[int(c)],
            "router_scores": {n: round(float(v), 5) for n, v in zip(names, s, strict=True)},
        }
        for pid, s, c in zip(ids, scores, choice, strict=True)
    ]
    write_jsonl(run.store.path("routes.jsonl"), rows)
    shares = {n: sum(r["teacher"] == n for r in rows) for n in names}
    report = policy_report(scores, choice, cost, names)
    run.store.mark_done("route", fp, {"routed": len(rows), "per_teacher": shares, "policy": report})
    log(f"route ({cfg.routing.kind}): {len(rows)} prompts -> {shares}")
    if cfg.routing.kind != "argmax":
        log(
            f"route: expected cost {report['cost']:.4g} vs {report['argmax_cost']:.4g} for "
            f"argmax; router score given up {report['score_given_up']:.3f} per prompt"
        )


ROUTE_CHUNK = 256  # prompts scored per router call; each chunk is logged before the next


def router_scores(run: Run, router: Any, ids: list[str], router_fp: str | None) -> np.ndarray:
    """The router's scores [prompts, teachers] for `ids`, computed in chunks and appended
    to `router/scores.jsonl` under the trained router's fingerprint: a killed `route`
    resumes where it stopped. The policy needs every score (a budget is global), so it
    runs once they are all there."""
    rowlog = RowLog(run.store.path("router", "scores.jsonl"), ("prompt_id", "fp"))
    by_id = run.prompts_by_id()
    todo = [pid for pid in ids if (pid, router_fp) not in rowlog]
    with bar("route: router scores", len(todo)) as progress:
        for start in range(0, len(todo), ROUTE_CHUNK):
            chunk = todo[start : start + ROUTE_CHUNK]
            chunk_scores = router.scores([by_id[pid].text for pid in chunk])
            rowlog.append(
                {"prompt_id": pid, "fp": router_fp, "scores": [float(v) for v in row]}
                for pid, row in zip(chunk, chunk_scores, strict=True)
            )
            progress.advance(len(chunk))
    rows = [rowlog.get((pid, router_fp))["scores"] for pid in ids]  # type: ignore[index]
    return np.array(rows, dtype=float).reshape(len(ids), len(run.cfg.teachers))


def mean_response_tokens(run: Run) -> dict[str, float]:
    """Mean completion tokens of each teacher's calibration responses (for expected costs)."""
    ids = run.split()["calibration"]
    means = {}
    for t in run.cfg.teachers:
        rowlog, fp = run.generation_log(t.name), teacher_fingerprint(t)
        rows = [rowlog.get((pid, fp)) for pid in ids]
        tokens = [r["completion_tokens"] for r in rows if r is not None and r["error"] is None]
        if tokens:
            means[t.name] = float(np.mean(tokens))
    return means


# -- generate ---------------------------------------------------------------------------
def generate(run: Run) -> None:
    """Each teacher answers only the prompts routed to it."""
    routes = read_jsonl(run.store.path("routes.jsonl"))
    teacher_fps = [teacher_fingerprint(t) for t in run.cfg.teachers]
    fp = fingerprint((run.store.marker("route") or {}).get("fingerprint"), teacher_fps)
    if run.store.is_done("generate", fp):
        return
    stats = {}
    for t in run.cfg.teachers:
        ids = [r["prompt_id"] for r in routes if r["teacher"] == t.name]
        stats[t.name] = _generate(run, t, ids, "generate")
    run.store.mark_done("generate", fp, {"teachers": stats})


# -- export -----------------------------------------------------------------------------
def export(run: Run) -> dict[str, Any]:
    """The personalised dataset (JSONL + `datasets` folder) and the run summary."""
    import datasets

    cfg = run.cfg
    names = cfg.teacher_names
    split = run.split()
    fps = {t.name: teacher_fingerprint(t) for t in cfg.teachers}
    logs = {t: run.generation_log(t) for t in names}
    rewards = {r["prompt_id"]: r for r in read_jsonl(run.store.path("rewards.jsonl"))}
    routes = {r["prompt_id"]: r for r in read_jsonl(run.store.path("routes.jsonl"))}

    rows, failed = [], []
    for p in run.prompts:
        if p.id in rewards:
            teacher, source = rewards[p.id]["oracle"], "oracle"
            scores = None
            reward = rewards[p.id]
            known = {
                k: dict(zip(names, reward[k], strict=True))
                for k in ("learnability", "quality", "reward")
            }
        else:
            teacher, source = routes[p.id]["teacher"], "router"
            scores, known = routes[p.id]["router_scores"], None
        gen = logs[teacher].get((p.id, fps[teacher])) if teacher else None
        if gen is None or gen["error"] is not None:
            why = (
                "no teacher had a usable response"
                if teacher is None
                else (gen["error"] if gen else "not generated")
            )
            failed.append({"prompt_id": p.id, "teacher": teacher, "error": why})
            continue
        rows.append(
            {
                "id": p.id,
                "messages": [*p.messages, {"role": "assistant", "content": gen["text"]}],
                "teacher": teacher,
                "selected_by": source,
                "kind": p.kind,
                "reference": p.reference,
                "router_scores": scores,
                "rewards": known,
            }
        )
    write_jsonl(run.store.path("dataset.jsonl"), rows)
    out_dir = run.store.path("dataset")
    tmp_dir = run.store.path(".dataset.tmp")
    import shutil

    shutil.rmtree(tmp_dir, ignore_errors=True)
    # JSON-encode the nested per-teacher dicts: their keys differ per pool, Arrow wants a schema.
    hf_rows = [
        {**r, "router_scores": _json(r["router_scores"]), "rewards": _json(r["rewards"])}
        for r in rows
    ]
    datasets.Dataset.from_list(hf_rows).save_to_disk(str(tmp_dir))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    write_jsonl(run.store.path("failed.jsonl"), failed)
    summary = build_summary(run, rows, failed, split, logs, fps)
    atomic_write_json(run.store.path("summary.json"), summary)
    from persyn.dataset_card import write_dataset_card

    write_dataset_card(run.store.root, cfg, summary)
    run.store.mark_done("export", fingerprint(summary["dataset_rows"], summary["generations"]), {})
    return summary


def _json(x: Any) -> str | None:
    import json

    return None if x is None else json.dumps(x, sort_keys=True)


def build_summary(
    run: Run,
    rows: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    split: dict[str, list[str]],
    logs: dict[str, RowLog],
    fps: dict[str, str],
) -> dict[str, Any]:
    """Counts, shares, costs and the headline numbers the demo prints."""
    cfg = run.cfg
    names = cfg.teacher_names
    n_prompts = len(run.prompts)
    calibration, routed = split["calibration"], split["routed"]
    routes = read_jsonl(run.store.path("routes.jsonl"))
    used = {t: 0 for t in names}
    tokens = {t: 0 for t in names}
    wanted = {(pid, t) for pid in calibration for t in names}
    wanted |= {(r["prompt_id"], r["teacher"]) for r in routes}
    for pid, t in wanted:
        g = logs[t].get((pid, fps[t]))
        if g is not None:
            used[t] += 1
            tokens[t] += g["completion_tokens"]
    cost = {t.name: tokens[t.name] / 1000 * t.cost_per_1k_tokens for t in cfg.teachers}
    oracle = [r["oracle"] for r in read_jsonl(run.store.path("rewards.jsonl"))]
    router_metrics = (run.store.marker("train-router") or {}).get("metrics", {})
    heldout = router_metrics.get("val")
    if heldout is not None:
        heldout = {**heldout, "best_fixed_teacher_name": names[int(heldout["best_fixed_teacher"])]}
    generations = sum(used.values())
    gts = n_prompts * len(names)
    return {
        "run": cfg.name,
        "prompts": n_prompts,
        "calibration_prompts": len(calibration),
        "routed_prompts": len(routed),
        "dataset_rows": len(rows),
        "failed_rows": len(failed),
        "failed_reasons": _count(f["error"] for f in failed),
        "dataset_share": {
            t: sum(r["teacher"] == t for r in rows) / max(len(rows), 1) for t in names
        },
        "oracle_share": {t: oracle.count(t) / max(len(oracle), 1) for t in names},
        "router_share": {
            t: sum(r["teacher"] == t for r in routes) / max(len(routes), 1) for t in names
        },
        "router_heldout": heldout,
        "generations": generations,
        "generate_then_select_generations": gts,
        "generation_ratio": generations / gts if gts else None,
        "completion_tokens": tokens,
        "cost": cost,
        "total_cost": sum(cost.values()),
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


STAGE_FUNCTIONS = {
    "prepare": prepare,
    "calibrate": calibrate,
    "score": score,
    "train-router": train_router,
    "route": route,
    "generate": generate,
    "export": export,
}


# The config sections each stage reads itself; a stage also depends on every earlier one.
STAGE_SECTIONS: dict[str, list[str]] = {
    "prepare": ["prompts", "calibration"],
    "calibrate": ["teachers"],
    "score": ["student", "rewards.quality", "rewards.mix"],
    "train-router": ["router"],
    "route": ["routing"],
    "generate": [],
    "export": [],
}


def config_sections(cfg: RunConfig) -> dict[str, str]:
    """Content hash of each config section a stage depends on, one per teacher (the same
    parts the stage fingerprints hash: a teacher's cost is in `routing`, not its own)."""
    student_fp, quality_fp = _score_fingerprints(cfg)
    return {
        "prompts": fingerprint(cfg.prompts),
        "calibration": fingerprint(cfg.calibration, cfg.router.val_fraction, cfg.router.seed),
        "student": student_fp,
        "rewards.quality": quality_fp,
        "rewards.mix": fingerprint(cfg.rewards.alpha, cfg.rewards.normalization),
        "router": fingerprint(cfg.router),
        "routing": fingerprint(cfg.routing, [t.cost_per_1k_tokens for t in cfg.teachers]),
        **{f"teacher:{t.name}": teacher_fingerprint(t) for t in cfg.teachers},
    }


def write_manifest(run: Run) -> None:
    """`manifest.json`: the section hashes, and per finished stage its fingerprint, when it
    finished and the sections it depends on (what a change there reruns)."""
    sections = config_sections(run.cfg)
    teachers = [f"teacher:{t}" for t in run.cfg.teacher_names]
    depends: list[str] = []
    stages = {}
    for name in STAGES:
        for section in STAGE_SECTIONS[name]:
            depends += teachers if section == "teachers" else [section]
        marker = run.store.marker(name)
        if marker is not None:
            stages[name] = {
                "fingerprint": marker["fingerprint"],
                "finished_at": marker["finished_at"],
                "depends_on": list(depends),
            }
    atomic_write_json(run.store.path("manifest.json"), {"sections": sections, "stages": stages})


def run_stage(run: Run, stage: str) -> Any:
    """Run `stage`, first running any earlier stage that is not done (each skips if done)."""
    upto = STAGES.index(stage)
    result = None
    for name in STAGES[: upto + 1]:
        result = STAGE_FUNCTIONS[name](run)
        write_manifest(run)
    return result


def run_pipeline(cfg: RunConfig, run_dir: str | None = None) -> dict[str, Any]:
    validate(cfg)
    run = Run.open(cfg, run_dir)
    run.store.path("config.yaml").parent.mkdir(parents=True, exist_ok=True)
    import yaml

    from persyn.store import atomic_write_text

    atomic_write_text(
        run.store.path("config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    )
    return run_stage(run, "export")
