"""A content hash per config section: what a stage depends on, by name (the stage table in
`persyn.pipeline` says which sections each stage reads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from persyn.calibration_source import source_fingerprint
from persyn.config import RunConfig, fingerprint
from persyn.data import source_digest
from persyn.rewards.learnability_signals import learnability_tie_margin
from persyn.stages.common import quality_fingerprint, student_fingerprint, teacher_fingerprint

# The part of the config behind each section name (the same parts the row caches key on:
# a teacher's cost is in `routing`, not in the teacher's own section).
SECTIONS: dict[str, Callable[[RunConfig], Any]] = {
    # The prompts file's content too: an edited file is prepared again.
    "prompts": lambda c: prompts_fingerprint(c),
    "calibration": lambda c: fingerprint(
        c.calibration.model_dump(mode="json", exclude={"source"}),
        c.router.val_fraction,
        c.router.test_fraction,
        c.router.seed,
    ),
    # The imported data's mapping and content (a changed file reruns the import).
    "calibration.source": lambda c: source_fingerprint(c.calibration.source),
    "student": student_fingerprint,
    "rewards.quality": quality_fingerprint,
    "rewards.mix": lambda c: fingerprint(
        c.rewards.alpha,
        c.rewards.normalization,
        c.rewards.tie_margin_quality,
        # the margin the mix applies: the configured one for the default signal (its key
        # from before signals scaled it), scaled for another
        learnability_tie_margin(c.rewards),
        *kept_truncated(c),
    ),
    # What a pilot student's score depends on besides the rewards and the calibration.
    "tune": lambda c: fingerprint(
        c.tune,
        c.student_training,
        c.evaluation.model_dump(mode="json", exclude={"lm_eval_tasks", "lm_eval_limit"}),
        *pilot_fallback(c),
    ),
    "router": lambda c: fingerprint(router_section(c)),
    # Without the fallback: how many teachers a failed answer falls back to changes
    # `generate`, not which teacher each prompt is routed to.
    "routing": lambda c: fingerprint(*routing_policy(c), *uncovered_key(c)),
    "routing.fallback": lambda c: fingerprint(c.routing.fallback_tries),
    # The card shows the whole config; where the run lives, its answer store and the
    # spend cap change nothing in it (a raised cap must not export again what is done).
    # With an explicit
    # alpha the tune section changes nothing in the run either: left out, so run
    # directories from before it existed keep their key.
    "export": lambda c: fingerprint(
        {
            **c.model_dump(
                mode="json",
                exclude={"run_dir", "max_cost", "store", "router"}
                | (set() if c.rewards.tuned else {"tune"}),
            ),
            "router": router_section(c),
        }
    ),
}


def router_section(cfg: RunConfig) -> dict[str, Any]:
    """The `router` section as the keys read it: the LM router's `novelty_encoder` only
    when set, so routers trained before the setting existed keep their key."""
    unset = {"lm": {"novelty_encoder"}} if cfg.router.lm.novelty_encoder is None else None
    return cfg.router.model_dump(mode="json", exclude=unset)


# The policy for prompts the calibration set does not cover (`routing.uncovered`).
UNCOVERED_KEYS = {
    "uncovered",
    "uncovered_confidence",
    "uncovered_teacher",
    "active_budget",
    "active_rounds",
    "vote_width",
    "vote_caution",
}


def routing_policy(cfg: RunConfig) -> list[Any]:
    """What decides which teacher a router's scores route a prompt to: the routing policy
    and the teachers' prices, without the fallback and the uncovered-prompt policy."""
    return [
        cfg.routing.model_dump(mode="json", exclude={"fallback_tries", *UNCOVERED_KEYS}),
        [(t.cost_per_1k_input_tokens, t.cost_per_1k_output_tokens) for t in cfg.teachers],
    ]


def pilot_fallback(cfg: RunConfig) -> list[int]:
    """[`routing.fallback_tries`] where routed tune pilots follow it (a prompt whose routed
    answer failed takes the next teacher of its chain), or nothing at the default: tune
    keys from before pilots followed it stay valid."""
    default = type(cfg.routing).model_fields["fallback_tries"].default
    if cfg.tune.pilot_answers != "routed" or cfg.routing.fallback_tries == default:
        return []
    return [cfg.routing.fallback_tries]


def uncovered_key(cfg: RunConfig) -> list[dict[str, Any]]:
    """[the uncovered-prompt policy's settings], or nothing for the default (`route`, no
    confidence threshold): routes keyed before the policy existed stay valid."""
    keys = cfg.routing.model_dump(mode="json", include=UNCOVERED_KEYS)
    if cfg.routing.uncovered == "route" and cfg.routing.uncovered_confidence is None:
        return []
    return [keys]


def kept_truncated(cfg: RunConfig) -> list[list[str]]:
    """[the teachers whose cut answers count (`generation.keep_truncated`)], or nothing when
    none does (the mix's key from before truncation was recorded): which answers failed
    decides the reward table."""
    kept = [t.name for t in cfg.teachers if t.generation.keep_truncated]
    return [kept] if kept else []


def prompts_fingerprint(cfg: RunConfig) -> str:
    digest = source_digest(cfg.prompts)
    # Without a local file (a generated set, a hub id) the fingerprint is what it always was.
    return fingerprint(cfg.prompts) if digest is None else fingerprint(cfg.prompts, digest)


def config_sections(cfg: RunConfig) -> dict[str, str]:
    """Content hash of each config section, with `teachers` as one entry per teacher."""
    named = {name: part(cfg) for name, part in SECTIONS.items()}
    return {**named, **{f"teacher:{t.name}": teacher_fingerprint(t) for t in cfg.teachers}}
