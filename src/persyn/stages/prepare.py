"""prepare: load and normalise the prompts; draw the calibration set and its router split."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from persyn.artifacts import Split
from persyn.calibration_select import carry_over_selection, select_calibration
from persyn.config import fingerprint
from persyn.config_checks import check_quality_coverage
from persyn.data import load_prompts
from persyn.progress import log, warn
from persyn.stages.imported import import_calibration

if TYPE_CHECKING:
    from persyn.run import Run


def prepare(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    prompts = load_prompts(cfg.prompts)
    drawn_with = fingerprint(cfg.calibration.model_dump(mode="json", exclude={"source"}))
    if cfg.calibration.source is None:
        ids = [p.id for p in prompts]
        previous = previous_split(run, drawn_with)
        if previous is not None and cfg.calibration.strategy == "random":
            # The prompts file changed: keep the calibration prompts a uniform draw allows.
            calibration = carry_over_selection(
                previous.calibration,
                previous.calibration + previous.routed,
                ids,
                cfg.calibration.size,
                cfg.calibration.seed,
            )
        else:
            calibration = select_calibration(cfg.calibration, ids, [p.text for p in prompts])
        if cfg.calibration.size > len(ids):
            warn(
                f"prepare: calibration.size {cfg.calibration.size} > {len(ids)} prompts: every "
                "prompt calibrates (every teacher answers it) and none is routed; lower "
                "calibration.size to route some"
            )
    else:  # the data's prompts calibrate; every prompt of `prompts` not among them is routed
        prompts, calibration = import_calibration(run, prompts)
    # Before the prompt table and split are written: a prompt kind no quality signal
    # covers stops the run here.
    kinds = check_quality_coverage(cfg, prompts)
    ids = [p.id for p in prompts]
    shuffled = calibration[:]
    random.Random(cfg.router.seed).shuffle(shuffled)
    # Test first, then validation: the router trains on the rest, picks its epoch on the
    # validation prompts and is reported on the test prompts, which neither step touched.
    n_test = round(len(shuffled) * cfg.router.test_fraction)
    n_val = round(len(shuffled) * cfg.router.val_fraction)
    chosen = set(calibration)
    split = Split(
        calibration=calibration,
        router_train=sorted(shuffled[n_test + n_val :]),
        router_val=sorted(shuffled[n_test : n_test + n_val]),
        router_test=sorted(shuffled[:n_test]),
        routed=[i for i in ids if i not in chosen],
        drawn_with=drawn_with,
    )
    run.store.write_prompts(prompts)
    run.store.write_split(split)
    run.set_prompts(prompts)
    log(f"prepare: {len(ids)} prompts, {len(calibration)} for calibration")
    return {"prompts": len(ids), "calibration": len(calibration), "kinds": kinds}


def previous_split(run: Run, drawn_with: str) -> Split | None:
    """The split of an earlier `prepare` in this run directory drawn with the same
    calibration settings (its prompts may have changed since), if any."""
    if not run.store.split_path().exists():
        return None
    try:
        split = run.store.split()
    except (ValueError, TypeError):  # damaged: draw afresh
        return None
    return split if split.drawn_with == drawn_with else None
