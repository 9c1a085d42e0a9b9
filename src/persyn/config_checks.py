"""The config checks that need the registries, run by `persyn validate` and before every run
(`persyn.run.validate`).

`persyn.config` imports nothing else of persyn, so it holds a registry's names as plain
strings: here each is checked against its registry (`persyn.registry`, plug-ins included),
and what an entry's declared capabilities ask of the rest of the config is checked with
them, never by the entry's name. Errors are one line naming the key.
"""

from __future__ import annotations

from persyn.config import ConfigError, RunConfig
from persyn.executors import EXECUTORS
from persyn.policies import POLICIES
from persyn.progress import warn
from persyn.rewards.learnability_signals import LEARNABILITY_SIGNALS, learnability_signal
from persyn.rewards.quality import QUALITY_SIGNALS, quality_signal
from persyn.router.routers import ROUTERS
from persyn.teachers.base import Prompt, can_generate, checked_backend


def check_config(cfg: RunConfig) -> None:
    check_registry_names(cfg)
    check_capabilities(cfg)


def check_registry_names(cfg: RunConfig) -> None:
    """Every registry-named field names a registered entry; a teacher's backend is also
    importable and has the `model` it needs."""
    for i, teacher in enumerate(cfg.teachers):
        checked_backend(teacher, f"teachers[{i}]")
    for i, signal in enumerate(cfg.rewards.quality):
        QUALITY_SIGNALS.check(signal.kind, f"rewards.quality[{i}].kind")
    ROUTERS.check(cfg.router.kind, "router.kind")
    POLICIES.check(cfg.routing.kind, "routing.kind")
    EXECUTORS.check(cfg.executor.kind, "executor.kind")
    learnability_signal(cfg.rewards.learnability)  # its name and options
    for i, name in enumerate(cfg.tune.learnability_signals or []):
        LEARNABILITY_SIGNALS.check(name, f"tune.learnability_signals[{i}]")


def check_capabilities(cfg: RunConfig) -> None:
    """What imported calibration data must give the teachers that cannot generate and the
    quality signals that read the data's scores."""
    source = cfg.calibration.source
    for t in cfg.teachers:
        if source is None and not can_generate(t):
            raise ConfigError(f"teacher {t.name!r}: backend `{t.backend}` needs calibration.source")
    for signal in cfg.rewards.quality:
        if not QUALITY_SIGNALS.load(signal.kind).needs_source_scores:
            continue
        if source is None:
            raise ConfigError(f"rewards.quality: kind `{signal.kind}` needs calibration.source")
        resolved = source.resolved()
        if not (resolved.score_field or resolved.scores):
            raise ConfigError(
                f"rewards.quality: kind `{signal.kind}` needs a score in the data: set "
                "calibration.source.score_field (or `scores` per teacher)"
            )


def check_quality_coverage(cfg: RunConfig, prompts: list[Prompt]) -> dict[str, dict[str, int]]:
    """Per prompt kind: its prompts and how many of them a configured quality signal
    applies to (`QualityScorer.applies`; nothing is loaded).

    A kind none of whose prompts any signal covers would have its teachers ranked on the
    student's learnability alone, which the defaults (`prompts.kind: instruction`,
    `rewards.quality: [math]`) would do without a word: one line naming the kind, its
    prompts and the signals that would cover it, unless the config says it is meant
    (`rewards.learnability_only`, or `alpha` 1). A kind only partly covered is a warning.
    """
    scorers = [quality_signal(s) for s in cfg.rewards.quality]
    coverage: dict[str, dict[str, int]] = {}
    for p in prompts:
        counts = coverage.setdefault(p.kind, {"prompts": 0, "covered": 0})
        counts["prompts"] += 1
        counts["covered"] += any(s.applies(p) for s in scorers)
    if cfg.rewards.learnability_only or cfg.rewards.alpha == 1:
        return coverage
    labels = ", ".join(s.label for s in cfg.rewards.quality) or "none"
    for kind, counts in coverage.items():
        if counts["covered"] == 0:
            raise ConfigError(
                f"rewards.quality: no quality signal (configured: {labels}) covers the "
                f"{counts['prompts']} prompts of kind `{kind}`, so their teachers would be "
                f"ranked on the student's learnability alone; add one that covers them: "
                f"{signals_covering(cfg, kind)}; or set rewards.learnability_only: true"
            )
        if counts["covered"] < counts["prompts"]:
            warn(
                f"rewards.quality: {counts['prompts'] - counts['covered']} of "
                f"{counts['prompts']} prompts of kind `{kind}` have no quality signal "
                f"({labels}); they are ranked on learnability alone"
            )
    return coverage


def signals_covering(cfg: RunConfig, kind: str) -> str:
    """The registered quality signals that can cover prompts of `kind`, with what each
    covers (those that need scores in `calibration.source` only when it is set)."""
    found = []
    for name in QUALITY_SIGNALS.names():
        cls = QUALITY_SIGNALS.load(name)
        if cls.needs_source_scores and cfg.calibration.source is None:
            continue
        if cls.kinds is None or kind in cls.kinds:
            found.append(f"{name} ({cls.covers})")
    return ", ".join(found)
