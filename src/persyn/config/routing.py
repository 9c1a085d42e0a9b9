"""The `routing` section: how router scores become one teacher per prompt, and what
happens to the routed prompts the calibration set does not cover (`routing.uncovered`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from persyn.config.base import Section


class RoutingPolicyConfig(Section):
    """How router scores become one teacher per prompt (registry persyn.policies.POLICIES)."""

    kind: str = Field(
        "argmax",
        description="`argmax` (the paper), `sample` (softmax with a temperature), "
        "`budget` (assignment under a cost budget and per-teacher quotas: an exact 0/1 "
        "program up to 20K prompt x teacher pairs, a Lagrangian or LP relaxation with "
        "rounding above), or a `persyn.policies` plug-in; checked by `persyn validate`.",
    )
    temperature: float = Field(1.0, gt=0, description="`sample`: softmax temperature.")
    seed: int = Field(0, description="`sample`: sampling seed.")
    budget: float | None = Field(
        None, ge=0, description="`budget`: most money spent on routed prompts (expected cost)."
    )
    max_share: dict[str, float] = Field(
        default_factory=dict,
        description="`budget`: per-teacher quota, the largest share of routed prompts (0..1).",
    )
    expected_tokens: dict[str, float] = Field(
        default_factory=dict,
        description="Expected response tokens per teacher; missing ones use the mean over "
        "the teacher's calibration responses.",
    )
    fallback_tries: int = Field(
        2,
        ge=0,
        description="A routed prompt whose answer failed goes to the router's next-best "
        "teacher (that can generate), up to this many other teachers; 0: no fallback, the "
        "prompt goes to failed.jsonl.",
    )
    uncovered: Literal["route", "fallback", "calibrate"] = Field(
        "route",
        description="What happens to a routed prompt the calibration set does not cover "
        "(novelty above the router's threshold, or confidence below "
        "`uncovered_confidence`): `route` routes it as any other (still reported); "
        "`fallback` sends it to a safe teacher (`uncovered_teacher`, else the best mean "
        "reward on the calibration prompts); `calibrate` has every teacher answer the most "
        "uncovered ones within `active_budget`, adds them to the calibration set, retrains "
        "the router and routes the rest again, for up to `active_rounds` rounds.",
    )
    uncovered_confidence: float | None = Field(
        None,
        ge=0.5,
        le=1,
        description="A routed prompt whose router confidence is below this also counts as "
        "uncovered; none: novelty alone decides (a router without an encoder space, "
        "`best-fixed` or `random`, then finds no prompt uncovered: set this for it).",
    )
    uncovered_teacher: str | None = Field(
        None,
        description="`fallback`: the teacher uncovered prompts go to; none: the teacher "
        "with the best mean reward on the calibration prompts.",
    )
    active_budget: float = Field(
        0.1,
        gt=0,
        le=1,
        description="`calibrate`: the most extra generations, as a share of the routed "
        "prompts (one generation each): each prompt added costs one answer from every "
        "teacher that can generate instead of one.",
    )
    active_rounds: int = Field(
        4,
        gt=0,
        description="`calibrate`: rounds of select, answer, retrain and route again; each "
        "round spends at most its share of what is left of the budget. More rounds of "
        "fewer prompts covered more prompt families in bench_coverage (bench/RESULTS.md).",
    )
    vote_width: float | Literal["auto"] = Field(
        0.05,
        description="`calibrate`: the kernel width, in cosine distance, of the vote that "
        "re-routes an uncovered prompt: the teacher of highest reward on its nearest scored "
        "prompts (weights exp(-distance / width)). `auto`: chosen each round among 0.02, "
        "0.05, 0.1, 0.2 and 0.5 by leave-one-out on the prompts active calibration added "
        "(the width whose vote of the other scored prompts loses least reward against their "
        "oracle). Default 0.05: over 30 bench_coverage seeds it left 7.3% of unseen-family "
        "prompts far below the oracle against 10.2% under `auto`, whose leave-one-out "
        "rests on the ten or so prompts a round adds (bench/RESULTS.md).",
    )
    vote_caution: float = Field(
        0.5,
        ge=0,
        description="`calibrate`: the vote takes each teacher's weighted mean reward on the "
        "nearest scored prompts less this many times its weighted standard deviation "
        "there, so a teacher right on some neighbours and far below on others loses to a "
        "steady one; 0: the plain mean. Default 0.5: on bench_coverage it left slightly "
        "fewer unseen-family prompts far below the oracle than 0 (246 against 263 of 3600 "
        "over 30 seeds; bench/RESULTS.md).",
    )

    @field_validator("vote_width")
    @classmethod
    def _positive_width(cls, v: float | str) -> float | str:
        if v != "auto" and not float(v) > 0:
            raise ValueError(f"{v}: vote_width must be above 0 or `auto`")
        return v

    @field_validator("max_share")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        for name, share in v.items():
            if not 0 <= share <= 1:
                raise ValueError(f"max_share[{name!r}] = {share}: must be between 0 and 1")
        return v
