"""Typed access to every artifact of a run directory, and to the folders of the commands
run after the pipeline.

Stages, baselines, the report, the experiment and the benchmarks read and write the run
directory only through `RunArtifacts` (`run`): file names live in this package and nowhere
else (`tests/test_architecture.py` checks), row shapes in `rows`, the other folders' files
in `folders`. Layout (relative to the run directory):

    config.yaml                    the resolved config of the last run
    prompts.jsonl                  normalised prompts (id, messages, kind, reference, meta)
    calibration.json               calibration ids, the router's train/val split, routed ids
    imported.jsonl                 calibration answers read from `calibration.source`
    generations/<teacher>.jsonl    row log: one row per (prompt, teacher config)
    batches/<teacher>.<stage>.json the Batch API batch a teacher waits for (`options.batch`);
                                   gone once its rows are saved
    scores/<signal>.jsonl          row logs: learnability per (prompt, teacher, student),
                                   quality per (prompt, teacher, quality config)
    rewards.jsonl, rewards_meta.json   per calibration prompt: raw and combined rewards, oracle
    rewards_alpha<a>.jsonl, alpha_sweep.{json,md}   `persyn score --alpha` re-mixes
    router/                        checkpoint (`RouterCheckpoint`; novelty.npz: calibration
                                   embeddings, novelty threshold), metrics.json,
                                   test_predictions.jsonl, scores.jsonl (row log of router
                                   scores), eval.{json,md}
    active/                        active calibration (`ActiveFiles`): rounds.json,
                                   rewards.jsonl (calibration + added prompts), round-<r>/
                                   router checkpoints
    routes.jsonl                   per routed prompt: teacher, key of its router scores,
                                   novelty, confidence, uncovered
    dataset.jsonl, dataset/        the personalised dataset (JSONL, `datasets` folder, card)
    failed.jsonl, summary.json     prompts without a row and why; counts, shares, costs
    demo_summary.json              `persyn demo`'s copy of the summary
    stages/<stage>.json, manifest.json   completion markers; section hashes per stage
    report/                        `persyn report` (`ReportFiles`)
    student/                       `persyn train` (`StudentFiles`; evaluations:
                                   `StudentEvalFiles`)
    experiment/                    `persyn experiment` (`ExperimentFiles`)
    tune/                          `persyn tune`, the `tune` stage (`TuneFiles`): pilot
                                   datasets, students, evaluations, table, plot, choice
    students/<name>/               with `students:` in the config, each student's artifacts
                                   (`StudentArtifacts`, `students`: what stays at the top)
    .lock                          the lock of the process working here (`RunStore.lock`)
"""

from persyn.artifacts.folders import (
    ActiveFiles,
    ExperimentFiles,
    NoveltyReference,
    ReportFiles,
    RouterCheckpoint,
    StudentEvalFiles,
    StudentFiles,
    TuneFiles,
)
from persyn.artifacts.rows import (
    SCORE_SIGNALS,
    Provenance,
    RewardTable,
    RowLogSpec,
    Split,
    dataset_features,
    dataset_row,
)
from persyn.artifacts.run import RunArtifacts
from persyn.artifacts.students import (
    SHARED_STAGES,
    StudentArtifacts,
    open_run_dir,
    student_folders,
)

__all__ = [
    "SCORE_SIGNALS",
    "SHARED_STAGES",
    "ActiveFiles",
    "ExperimentFiles",
    "NoveltyReference",
    "Provenance",
    "ReportFiles",
    "RewardTable",
    "RouterCheckpoint",
    "RowLogSpec",
    "RunArtifacts",
    "Split",
    "StudentArtifacts",
    "StudentEvalFiles",
    "StudentFiles",
    "TuneFiles",
    "dataset_features",
    "dataset_row",
    "open_run_dir",
    "student_folders",
]
