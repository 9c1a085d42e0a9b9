"""prepare: load and normalise the prompts; draw the calibration set and its router split."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from persyn.artifacts import Split
from persyn.calibration_select import select_calibration
from persyn.data import load_prompts
from persyn.progress import log

if TYPE_CHECKING:
    from persyn.pipeline import Run


def prepare(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    prompts = load_prompts(cfg.prompts)
    ids = [p.id for p in prompts]
    calibration = select_calibration(cfg.calibration, ids, [p.text for p in prompts])
    shuffled = calibration[:]
    random.Random(cfg.router.seed).shuffle(shuffled)
    n_val = round(len(shuffled) * cfg.router.val_fraction)
    chosen = set(calibration)
    split = Split(
        calibration=calibration,
        router_train=sorted(shuffled[n_val:]),
        router_val=sorted(shuffled[:n_val]),
        routed=[i for i in ids if i not in chosen],
    )
    run.store.write_prompts(prompts)
    run.store.write_split(split)
    run.set_prompts(prompts)
    size = min(cfg.calibration.size, len(ids))
    log(f"prepare: {len(ids)} prompts, {size} for calibration")
    return {"prompts": len(ids), "calibration": size}
