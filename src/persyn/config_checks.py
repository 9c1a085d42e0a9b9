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
from persyn.rewards.quality import QUALITY_SIGNALS
from persyn.router.routers import ROUTERS
from persyn.teachers.base import can_generate, checked_backend


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
