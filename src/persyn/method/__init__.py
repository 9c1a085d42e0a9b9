"""PerSyn's algorithm, over arrays: from teachers' rewards to one teacher per prompt.

Route then Generate (arXiv 2510.10925): every teacher answers a small calibration set, a
router learns from those answers' rewards which teacher suits which prompt, and on every
other prompt only the teacher the router picks generates. This package is the method and
nothing else: no files, no models loaded, no config read. Rewards come in as arrays
[prompts, teachers] with NaN where a teacher has no scored answer (not asked, or a score
that could not be computed); a combined reward marks a failed answer (an error, an empty
answer, one cut off) -inf: below every answer of the prompt. The router is any module
mapping prompts to scores [prompts, teachers]. In order (`rewards` holds 2-5, `fit` 6-8):

1. Rewards per prompt x, teacher n and answer y, computed in `persyn.rewards`:
   learnability r_l = (1/|y|) sum_t log p_student(y_t | x, y_<t) (the student's mean token
   log-likelihood of the answer) and quality r_q (a reward model's score, or 1/0 for a
   right/wrong final answer).
2. `normalize`: each reward is normalised within the prompt, across the teachers that
   have both rewards, so that rewards on different scales can be mixed and each prompt
   counts the same: min-max to [0, 1] (default), z-score, or rank. Raw values within a
   tie margin are equal first (`merge_ties`: 0.01 nats of learnability, 1e-9 of quality),
   so noise does not become a full preference. A constant row maps to 0.5 (z-score: 0).
3. `combine`: r = (1 - alpha) * norm(r_q) + alpha * norm(r_l); alpha = 0.4 is the paper's
   best (0: quality only, 1: learnability only). `mark_failed` sets failed answers to
   -inf; where a number is needed they are charged `failure_reward`, the bottom of the
   normalisation's scale (min-max, rank: 0; z-score: -sqrt(teachers - 1)).
4. `oracle_choice`: argmax_n r(x, n), Generate then Select's pick; calibration prompts keep
   it, and it is what the router is measured against. Ties go to the higher raw
   learnability, then the cheaper teacher, then the one listed first.
5. `training_pairs`: on each prompt, every teacher pair (a, b) with r_b > r_a is a row
   (x, b, a), "b beats a" (19 teachers: 171 pairs a prompt); a failed answer loses to every
   answer. Pairs within `tie_margin` (and two failed answers) are ties: skipped, or trained
   towards 0.5 (`ties="half"`).
6. `bradley_terry_loss`: P(b beats a | x) = sigmoid(pi_b(x) - pi_a(x)) for router scores
   pi(x) in R^teachers, trained by binary cross-entropy; for b the winner that is
   -log sigmoid(pi_b(x) - pi_a(x)), averaged over pairs.
7. `fit_bradley_terry`: the training loop of every learnt router (a head over frozen
   features, or a language model): AdamW over batches of pairs, the loss on the training
   and validation prompts after each epoch, the weights of the epoch with the lowest
   validation loss kept, early stopping after `patience` epochs without improvement.
   Without validation prompts every epoch runs and the last is kept: that is how the
   router that routes is refit on train + validation for the epochs validation chose.
8. `choose_teachers`: teacher = argmax_n pi_n(x), one forward pass per prompt; only that
   teacher generates the prompt's answer.

`coverage` says how well the calibration set covers a routed prompt: its `novelty` (mean
cosine distance to the k nearest calibration prompts, thresholded at a quantile of the
held-out calibration prompts' own novelty) and the router's `confidence` (the top-1
teacher's Bradley-Terry win probability against the runner-up); `uncovered` marks the
prompts above the novelty threshold (or below a confidence floor); active calibration adds
those `select_uncovered` orders, spread over the encoder space by `representative`,
within `active_prompt_budget`, and `keep_covered` keeps the first router's teacher for
the prompts it covered (and for those with no added prompt among their nearest calibration
prompts, `near_any`); the others take `neighbour_vote`'s teacher (the highest reward on
their nearest scored prompts less a share of its spread there; its kernel width pinned or
chosen by leave-one-out on the added prompts: `vote_width_loss`, `vote_width`).
"""

from persyn.method.coverage import (
    VOTE_WIDTHS,
    active_prompt_budget,
    confidence,
    keep_covered,
    near_any,
    neighbour_vote,
    novelty,
    novelty_threshold,
    representative,
    select_uncovered,
    uncovered,
    vote_width,
    vote_width_loss,
)
from persyn.method.fit import (
    PAIR_BATCH_PROMPTS,
    Batch,
    EpochCallback,
    FitSettings,
    RouterData,
    bradley_terry_loss,
    choose_teachers,
    fit_bradley_terry,
    predict,
    trained_state,
)
from persyn.method.rewards import (
    LEARNABILITY_TIE_MARGIN,
    NORMALIZATIONS,
    QUALITY_TIE_MARGIN,
    any_ordered_pair,
    charge_failures,
    combine,
    failure_reward,
    mark_failed,
    merge_ties,
    normalize,
    oracle_choice,
    preference_pairs,
    tied_pairs,
    training_pairs,
)

__all__ = [
    "LEARNABILITY_TIE_MARGIN",
    "NORMALIZATIONS",
    "PAIR_BATCH_PROMPTS",
    "QUALITY_TIE_MARGIN",
    "VOTE_WIDTHS",
    "Batch",
    "EpochCallback",
    "FitSettings",
    "RouterData",
    "active_prompt_budget",
    "any_ordered_pair",
    "bradley_terry_loss",
    "charge_failures",
    "choose_teachers",
    "combine",
    "confidence",
    "failure_reward",
    "fit_bradley_terry",
    "keep_covered",
    "mark_failed",
    "merge_ties",
    "near_any",
    "neighbour_vote",
    "normalize",
    "novelty",
    "novelty_threshold",
    "oracle_choice",
    "predict",
    "preference_pairs",
    "representative",
    "select_uncovered",
    "tied_pairs",
    "trained_state",
    "training_pairs",
    "uncovered",
    "vote_width",
    "vote_width_loss",
]
