"""Mappings of known parallel-response datasets (`calibration.source.preset`): plain data,
here so the config resolves and checks a source without importing the importer
(`persyn.calibration_import`)."""

from __future__ import annotations

from typing import Any, Literal

# Mapping fields per known dataset shape; a field set in the config overrides the preset's.
# Scales: UltraFeedback's overall_score is a 1-10 grade, Nectar's rank 1 (best) to 7,
# LLMRouterBench's score a 0-1 correctness. MixInstruct's candidates carry only
# reference-based metrics (`score_field: scores.bartscore` picks one).
PRESETS: dict[str, dict[str, Any]] = {
    # Column per model: name each teacher's column in `responses`.
    "magpie-zoo": {"prompt": "instruction", "id": "uuid"},
    "ultrafeedback": {
        "prompt": "instruction",
        "list_column": "completions",
        "model_field": "model",
        "response_field": "response",
        "score_field": "overall_score",
        "score_range": (1.0, 10.0),
    },
    "nectar": {
        "prompt": "prompt",
        "list_column": "answers",
        "model_field": "model",
        "response_field": "answer",
        "score_field": "rank",
        "score_direction": "lower",
        "score_range": (1.0, 7.0),
    },
    "mixinstruct": {
        "prompt": "instruction",
        "input": "input",
        "id": "id",
        "list_column": "candidates",
        "model_field": "model",
        "response_field": "text",
    },
    # `persyn store export`: one record per stored answer, the model is the teacher's name.
    "persyn-store": {
        "prompt": "prompt",
        "id": "id",
        "model_field": "model",
        "response_field": "response",
        "tokens_field": "completion_tokens",
    },
    "routerbench": {
        "prompt": "origin_query",
        "records_field": "records",
        "response_field": "prediction",
        "reference": "ground_truth",
        "score_field": "score",
        "score_range": (0.0, 1.0),
        "tokens_field": "completion_tokens",
    },
}

# How a source's rows hold the answers (see `CalibrationSource.layout`).
Layout = Literal["wide", "list", "records"]
