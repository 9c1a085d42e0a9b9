"""Learnability is a pluggable signal (`rewards.learnability`): the paper's mean token
log-likelihood by default, the Rank-Surprisal Ratio (arXiv 2601.14249) built in, others as
`persyn.learnability` plug-ins; each reads the same forward pass and declares its range."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_learnability import PAIRS
from test_plugins_entry_points import fake_distribution
from test_score_cache import ROWS, score_again, scoring_config

from persyn.artifacts.rows import check_learnability_row
from persyn.config import (
    ConfigError,
    LearnabilitySignalConfig,
    RunConfig,
    StudentConfig,
    fingerprint,
    parse_config,
)
from persyn.eval.tune import Setting, setting_config
from persyn.fingerprints import SECTIONS
from persyn.models import load_causal_lm
from persyn.pipeline import Run
from persyn.rewards.learnability import LearnabilityScorer
from persyn.rewards.learnability_signals import LEARNABILITY_SIGNALS, learnability_tie_margin
from persyn.run import validate
from persyn.stages.common import learnability_fingerprint
from persyn.stages.score import combined_reward
from persyn.store import ImpossibleRow


def test_the_registry_lists_the_paper_signal_and_rsr() -> None:
    assert {"mean_logprob", "rank_surprisal_ratio"} <= set(LEARNABILITY_SIGNALS.names())
    assert LearnabilitySignalConfig().name == "mean_logprob"  # the paper's stays the default


def reference_rsr(model: Any, tokenizer: Any, messages: list, response: str, clip: int) -> float:
    """Built apart from persyn's scorer: the conversation rendered by the chat template and
    tokenised whole, the answer's tokens found by their characters, one unbatched forward
    pass; per token the surprisal from a full log-softmax and the rank counted over the
    whole vocabulary; -(sum of clipped ranks) / (sum of surprisals), as the paper."""
    text = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": response}], tokenize=False
    )
    start = text.rindex(response)
    end = start + len(response)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    span = [k for k, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and b > start]
    ids = encoded["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    ranks, surprisal = 0, 0.0
    for k in span:  # position k - 1 predicts token k
        row = logits[k - 1]
        ranks += min(clip, 1 + sum(1 for v in row.tolist() if v > row[ids[k]].item()))
        surprisal -= logp[k - 1, ids[k]].item()
    return -ranks / surprisal


@pytest.mark.parametrize("clip", [100, 10**6], ids=["paper-clip", "unclipped"])
def test_rank_surprisal_ratio_matches_an_independent_reference(
    tiny_lm_dir: Path, clip: int
) -> None:
    cfg = StudentConfig(model=str(tiny_lm_dir), dtype="float32", batch_tokens=256)
    signal = LearnabilitySignalConfig(name="rank_surprisal_ratio", options={"rank_clip": clip})
    scores = LearnabilityScorer(cfg, signal).score(PAIRS)
    model, tokenizer = load_causal_lm(cfg)
    for (messages, response), s in zip(PAIRS, scores, strict=True):
        expected = reference_rsr(model, tokenizer, messages, response, clip)
        assert s.value is not None and s.value < 0
        assert s.value == pytest.approx(expected, rel=1e-4)


SIGNAL_MODULE = """
from persyn.rewards.learnability_signals import LearnabilitySignal

class AnswerLength(LearnabilitySignal):
    '''Positive values, which the paper's signal could never give.'''
    name = "answer_length"
    bounds = (1.0, float("inf"))

    def value(self, tokens):
        return float(len(tokens.logprobs))
"""


def test_a_plugin_signal_scores_a_run(
    tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `persyn.learnability` entry point is chosen by name, its values fill the rows and
    the reward table, and its declared range keeps them (they are above 0) when the log
    is read again."""
    (tmp_path / "fake_signals.py").write_text(SIGNAL_MODULE)
    fake_distribution(
        tmp_path, "persyn.learnability", {"answer_length": "fake_signals:AnswerLength"}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = scoring_config(tiny_lm_dir, tmp_path / "run")
    data["rewards"] = {**data["rewards"], "learnability": "answer_length"}
    rows = score_again(data)
    assert len(rows) == ROWS
    assert all(r["signal"] == "answer_length" for r in rows)
    assert all(r["learnability"] == r["response_tokens"] > 0 for r in rows)
    run = Run.open(parse_config(data))
    assert len(run.store.score_log("learnability").rows) == ROWS  # none dropped as impossible
    # it sets no `tie_margin_scale`: the configured margin is taken as it is
    assert learnability_tie_margin(run.cfg.rewards) == run.cfg.rewards.tie_margin_learnability
    table = run.store.rewards()
    values = {(r["prompt_id"], r["teacher"]): r["learnability"] for r in rows}
    for i, pid in enumerate(table.ids):
        for j, teacher in enumerate(table.teachers):
            assert table.learnability[i, j] == pytest.approx(values[pid, teacher])


def test_an_unknown_signal_or_option_is_refused_with_what_is_known(tmp_path: Path) -> None:
    data = scoring_config(tmp_path / "student", tmp_path / "run")
    data["rewards"] = {**data["rewards"], "learnability": {"name": "nope"}}
    with pytest.raises(ConfigError) as err:
        validate(parse_config(data))
    assert str(err.value) == (
        "rewards.learnability.name: unknown learnability signal 'nope'; choose one of "
        "['mean_logprob', 'rank_surprisal_ratio']"
    )
    data["rewards"]["learnability"] = {"name": "rank_surprisal_ratio", "options": {"rank_clip": 0}}
    with pytest.raises(ConfigError, match="rank_clip: 0 is not a whole number >= 1"):
        validate(parse_config(data))


def test_another_signal_rescores_learnability_and_regenerates_nothing(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    data = scoring_config(tiny_lm_dir, tmp_path / "run")
    assert len(score_again(data)) == ROWS
    store = Run.open(parse_config(data)).store

    def untouched() -> tuple[Any, ...]:
        """The answers, the quality rows and the calibrate stage's marker."""
        answers = [store.generation_path(t["name"]).read_text() for t in data["teachers"]]
        quality = store.score_path("quality").read_text()
        return answers, quality, store.marker("calibrate")

    before = untouched()
    rsr = {**data, "rewards": {**data["rewards"], "learnability": "rank_surprisal_ratio"}}
    rescored = score_again(rsr)
    assert len(rescored) == ROWS and all(r["signal"] == "rank_surprisal_ratio" for r in rescored)
    assert all(r["learnability"] < 0 for r in rescored)
    assert untouched() == before
    # back to the paper's signal: its rows are still there, none is computed again
    assert score_again(data) == []


def test_the_default_signal_keeps_the_keys_of_earlier_runs(
    tiny_lm_dir: Path, tmp_path: Path
) -> None:
    """Naming the default changes no key; another signal (or option) does."""
    data = scoring_config(tiny_lm_dir, tmp_path / "run")
    keys = []
    for learnability in (None, "mean_logprob", "rank_surprisal_ratio"):
        if learnability is not None:
            data["rewards"] = {**data["rewards"], "learnability": learnability}
        keys.append(learnability_fingerprint(parse_config(data)))
    assert keys[0] == keys[1] != keys[2]


@pytest.mark.parametrize(
    ("row", "kept"),
    [
        ({"learnability": -1.5}, True),  # rows from before signals were recorded
        ({"learnability": 0.5}, False),
        ({"learnability": 0.5, "signal": "mean_logprob"}, False),
        ({"learnability": -40.0, "signal": "rank_surprisal_ratio"}, True),
        ({"learnability": 2.0, "signal": "rank_surprisal_ratio"}, False),
        ({"learnability": 2.0, "signal": "not-installed-here"}, True),
        ({"learnability": None, "error": "no response tokens", "signal": "mean_logprob"}, True),
    ],
)
def test_a_row_must_be_in_its_signals_range(row: dict[str, Any], kept: bool) -> None:
    if kept:
        check_learnability_row(row)
    else:
        with pytest.raises(ImpossibleRow, match="outside"):
            check_learnability_row(row)


def test_rsr_of_a_perfectly_predicted_answer_is_finite() -> None:
    """No surprisal at all (nothing left to learn): the lowest value, not a division by 0."""
    from persyn.rewards.learnability_signals import AnswerTokens, learnability_signal

    signal = learnability_signal(LearnabilitySignalConfig(name="rank_surprisal_ratio"))
    value = signal.value(AnswerTokens(np.zeros(3, dtype=np.float32), np.ones(3, dtype=int)))
    assert math.isfinite(value) and value < -1e9


# Two answers' learnability 0.012 apart: more than the default margin (0.01), less than the
# margin scaled to -RSR units (0.015).
CLOSE = [-1.0, -1.012]


def mix_config(tmp_path: Path, signal: str | None = None) -> RunConfig:
    """The scoring tests' config (no model is loaded), with learnability `signal`."""
    data = scoring_config(tmp_path / "student", tmp_path / "run")
    if signal is not None:
        data["rewards"] = {**data["rewards"], "learnability": signal}
    return parse_config(data)


def close_pair_rewards(cfg: RunConfig) -> tuple[float, float]:
    """The combined rewards of two answers of one prompt, equal in quality and CLOSE in
    learnability (the other teachers did not answer)."""
    learn = np.full((1, len(cfg.teachers)), np.nan)
    qual = np.full_like(learn, np.nan)
    learn[0, :2], qual[0, :2] = CLOSE, 1.0
    reward, _ = combined_reward(cfg, learn, qual)
    return reward[0, 0], reward[0, 1]


def test_the_tie_margin_is_scaled_to_the_mixed_signals_units(tmp_path: Path) -> None:
    paper = mix_config(tmp_path)
    assert learnability_tie_margin(paper.rewards) == paper.rewards.tie_margin_learnability
    high, low = close_pair_rewards(paper)
    assert high > low  # a preference at the paper's signal, as before
    rsr = mix_config(tmp_path, "rank_surprisal_ratio")
    assert learnability_tie_margin(rsr.rewards) == pytest.approx(0.015)
    high, low = close_pair_rewards(rsr)
    assert high == low  # within the scaled margin: a tie
    # tune mixes each setting at the setting's signal, not the run's
    tuned = setting_config(paper, Setting(0.4, "rank_surprisal_ratio"))
    high, low = close_pair_rewards(tuned)
    assert high == low
    assert close_pair_rewards(setting_config(rsr, Setting(0.4, "mean_logprob")))[0] > low


def test_the_mix_key_holds_the_margin_it_applies(tmp_path: Path) -> None:
    """The paper's signal keeps its key from before the margin was scaled (score is not
    redone); another signal's key has its scaled margin (its rewards changed)."""

    def unscaled_key(cfg: RunConfig) -> str:
        rw = cfg.rewards
        return fingerprint(
            rw.alpha, rw.normalization, rw.tie_margin_quality, rw.tie_margin_learnability
        )

    paper, rsr = mix_config(tmp_path), mix_config(tmp_path, "rank_surprisal_ratio")
    assert SECTIONS["rewards.mix"](paper) == unscaled_key(paper)
    assert SECTIONS["rewards.mix"](rsr) != unscaled_key(rsr)
