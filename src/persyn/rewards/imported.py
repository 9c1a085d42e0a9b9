"""The `imported` quality signal: the score a parallel-response dataset gave an answer."""

from __future__ import annotations

from typing import ClassVar

from persyn.calibration_import import IMPORTED_QUALITY, response_digest
from persyn.rewards.base import QualityScorer, Sample, SignalScore


class ImportedScore(QualityScorer):
    """The data's own score of the response (`calibration.source` `score_field` or
    `scores`), already mapped to [0, 1] by the import (min-max over `score_range` or over
    every imported score, flipped for `score_direction: lower`).

    The import stores each calibration prompt's scores in its meta, keyed by a digest of
    the answer's text: a score grades a text, so a generated answer with the same text gets
    the same score. Applies to answers the data scored; any other (a generated answer, a
    model the data left unscored) gets no value from this signal, and the other signals
    decide its quality.
    """

    name = "imported"
    needs_source_scores: ClassVar[bool] = True

    def score(self, samples: list[Sample]) -> list[SignalScore | None]:
        out: list[SignalScore | None] = []
        for prompt, response in samples:
            value = prompt.meta.get(IMPORTED_QUALITY, {}).get(response_digest(response))
            out.append(None if value is None else SignalScore(float(value)))
        return out
