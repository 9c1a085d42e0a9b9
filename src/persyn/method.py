"""PerSyn's algorithm, over arrays: from teachers' rewards to one teacher per prompt.

Route then Generate (arXiv 2510.10925): every teacher answers a small calibration set, a
router learns from those answers' rewards which teacher suits which prompt, and on every
other prompt only the teacher the router picks generates. This module is the method and
nothing else: no files, no models loaded, no config read. Rewards come in as arrays
[prompts, teachers] with NaN where a teacher has no usable (or no scored) answer; the
router is any module mapping prompts to scores [prompts, teachers]. In order:

1. Rewards per prompt x, teacher n and answer y, computed in `persyn.rewards`:
   learnability r_l = (1/|y|) sum_t log p_student(y_t | x, y_<t) (the student's mean token
   log-likelihood of the answer) and quality r_q (a reward model's score, or 1/0 for a
   right/wrong final answer).
2. `normalize`: each reward is normalised within the prompt, across teachers, so that
   rewards on different scales can be mixed and each prompt counts the same: min-max to
   [0, 1] (default), z-score, or rank. A constant row maps to 0.5 (z-score: 0).
3. `combine`: r = (1 - alpha) * norm(r_q) + alpha * norm(r_l); alpha = 0.4 is the paper's
   best (0: quality only, 1: learnability only).
4. `oracle_choice`: argmax_n r(x, n), Generate then Select's pick; calibration prompts keep
   it, and it is what the router is measured against.
5. `training_pairs`: on each prompt, every teacher pair (a, b) with r_b > r_a is a row
   (x, b, a), "b beats a" (19 teachers: 171 pairs a prompt). Pairs within `tie_margin` are
   ties: skipped, or trained towards 0.5 (`ties="half"`).
6. `bradley_terry_loss`: P(b beats a | x) = sigmoid(pi_b(x) - pi_a(x)) for router scores
   pi(x) in R^teachers, trained by binary cross-entropy; for b the winner that is
   -log sigmoid(pi_b(x) - pi_a(x)), averaged over pairs.
7. `fit_bradley_terry`: the training loop of every learnt router (a head over frozen
   features, or a language model): AdamW over batches of pairs, the loss on the training
   and validation prompts after each epoch, the weights of the epoch with the lowest
   validation loss kept, early stopping after `patience` epochs without improvement.
8. `choose_teachers`: teacher = argmax_n pi_n(x), one forward pass per prompt; only that
   teacher generates the prompt's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

NORMALIZATIONS = ("minmax", "zscore", "rank")
EpochCallback = Callable[[dict[str, float]], None]


# 2. Normalise within each prompt


def normalize(x: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Row-wise normalisation; a constant row (or one value) maps to 0.5 (zscore: 0). NaN
    cells are left out and stay NaN.

    - minmax: (x - min) / (max - min), in [0, 1]
    - zscore: (x - mean) / std (population std)
    - rank:   average rank scaled to [0, 1] (ties share a rank)
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")
    x = np.asarray(x, dtype=float)
    out = np.full_like(x, np.nan)
    for i, row in enumerate(x):
        ok = ~np.isnan(row)
        v = row[ok]
        if v.size == 0:
            continue
        spread = v.max() - v.min()
        if spread == 0:
            out[i, ok] = 0.0 if method == "zscore" else 0.5
        elif method == "minmax":
            out[i, ok] = (v - v.min()) / spread
        elif method == "zscore":
            out[i, ok] = (v - v.mean()) / v.std()
        else:
            from scipy.stats import rankdata  # scipy.stats takes a second to import

            out[i, ok] = (rankdata(v) - 1) / (v.size - 1)
    return out


# 3. Mix quality and learnability


def combine(quality: np.ndarray, learnability: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """r = (1 - alpha) * norm(quality) + alpha * norm(learnability).

    A prompt no quality signal applies to has a constant quality row (so learnability
    decides); a single missing score stays missing.
    """
    quality = np.array(quality, dtype=float)
    quality[np.isnan(quality).all(axis=1)] = 0.0
    return (1 - alpha) * normalize(quality, method) + alpha * normalize(learnability, method)


# 4. The oracle


def oracle_choice(reward: np.ndarray) -> np.ndarray:
    """Index of the best teacher per prompt (first on ties); -1 where no score exists."""
    filled = np.where(np.isnan(reward), -np.inf, reward)
    choice = filled.argmax(axis=1)
    choice[np.isneginf(filled.max(axis=1))] = -1
    return choice


# 5. Bradley-Terry pairs


def preference_pairs(reward: np.ndarray, tie_margin: float = 1e-6) -> np.ndarray:
    """Rows (prompt, winner, loser) for every teacher pair whose rewards differ."""
    return _pairs(reward, tie_margin)[0]


def tied_pairs(reward: np.ndarray, tie_margin: float = 1e-6) -> np.ndarray:
    """Rows (prompt, a, b) for every teacher pair within `tie_margin` (both rewards known)."""
    return _pairs(reward, tie_margin)[1]


def _pairs(reward: np.ndarray, tie_margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Ordered and tied pairs, prompt by prompt and teacher pair (a < b) by pair."""
    reward = np.asarray(reward, dtype=float)
    a, b = np.triu_indices(reward.shape[1], k=1)
    ra, rb = reward[:, a], reward[:, b]
    known = ~np.isnan(ra) & ~np.isnan(rb)
    with np.errstate(invalid="ignore"):  # inf - inf: neither a tie nor ordered by `>`
        tie = known & (np.abs(ra - rb) <= tie_margin)
    prompt, pair = np.nonzero(known & ~tie)
    b_wins = rb[prompt, pair] > ra[prompt, pair]
    winner = np.where(b_wins, b[pair], a[pair])
    loser = np.where(b_wins, a[pair], b[pair])
    tie_prompt, tie_pair = np.nonzero(tie)
    return (
        np.stack([prompt, winner, loser], axis=1).astype(np.int64),
        np.stack([tie_prompt, a[tie_pair], b[tie_pair]], axis=1).astype(np.int64),
    )


def training_pairs(
    reward: np.ndarray, tie_margin: float, ties: Literal["skip", "half"] = "skip"
) -> tuple[np.ndarray, np.ndarray]:
    """(pairs, targets): ordered pairs with target 1, plus ties with target 0.5 if asked."""
    ordered, tied = _pairs(reward, tie_margin)
    if ties == "skip" or len(tied) == 0:
        return ordered, np.ones(len(ordered), dtype=np.float32)
    targets = np.concatenate([np.ones(len(ordered)), np.full(len(tied), 0.5)]).astype(np.float32)
    return np.concatenate([ordered, tied]), targets


def any_ordered_pair(reward: np.ndarray, tie_margin: float) -> bool:
    """Whether some prompt has two teachers whose rewards differ by more than the tie
    margin (a pair a router can learn an order from), without building the pairs."""
    filled = np.isfinite(reward)
    high = np.where(filled, reward, -np.inf).max(axis=1, initial=-np.inf)
    low = np.where(filled, reward, np.inf).min(axis=1, initial=np.inf)
    two = filled.sum(axis=1) >= 2  # rows with at least one pair
    return bool(np.any((high - low)[two] > tie_margin))


# 6. The Bradley-Terry loss


def bradley_terry_loss(scores: Any, pairs: Any, targets: Any = None) -> Any:
    """Mean BCE of sigmoid(pi_first - pi_second) against `targets` (default 1: first wins).

    `scores` is a torch tensor [prompts, teachers]; `pairs` rows (prompt, first, second).
    """
    import torch.nn.functional as F

    pairs = pairs.to(scores.device)  # a router on a GPU scores there; pairs are built on CPU
    margin = scores[pairs[:, 0], pairs[:, 1]] - scores[pairs[:, 0], pairs[:, 2]]
    if targets is None:
        return -F.logsigmoid(margin).mean()
    return F.binary_cross_entropy_with_logits(margin, targets.to(scores.device))


# 7. The fit


@dataclass(frozen=True)
class RouterData:
    """Calibration prompts with every teacher's reward [prompts, teachers] (NaN: missing), and
    optionally held-out ones for early stopping. Prompts are texts, or what a model reads."""

    prompts: Any
    reward: np.ndarray
    val_prompts: Any = None
    val_reward: np.ndarray | None = None

    @property
    def has_val(self) -> bool:
        return (
            self.val_prompts is not None
            and len(self.val_prompts) > 0
            and self.val_reward is not None
        )

    def map(self, prepare: Callable[[Any], Any]) -> RouterData:
        """The same rewards with the prompts turned into model inputs (features, arrays)."""
        if not self.has_val:
            return RouterData(prepare(self.prompts), self.reward)
        return RouterData(
            prepare(self.prompts), self.reward, prepare(self.val_prompts), self.val_reward
        )


@dataclass(frozen=True)
class FitSettings:
    """How a router trains: which pairs (`tie_margin`, `ties`), passes, step size, and what
    one optimiser step sees: `batch` random pairs (`by="pairs"`, heads: scoring a prompt is
    cheap), or `batch` random prompts with all their pairs (`by="prompts"`, language
    models: a prompt costs a forward pass, which is also the batch they are scored in for
    the epoch losses)."""

    epochs: int
    learning_rate: float
    batch: int
    by: Literal["pairs", "prompts"]
    weight_decay: float
    patience: int | None  # epochs without a better validation loss before stopping
    seed: int
    tie_margin: float
    ties: Literal["skip", "half"]


@dataclass(frozen=True)
class Batch:
    rows: torch.Tensor  # the prompts this step scores
    pairs: torch.Tensor  # (index into `rows`, first, second)
    targets: torch.Tensor


# Random pairs over many prompts make each step score every prompt they touch: with 4,096
# pairs a step scores up to 4,096 prompts, so an epoch would grow as prompts x pairs until
# the calibration set is several times larger than that. Pairs are instead drawn from
# random groups of this many prompts (a step scores at most about this many), which keeps
# an epoch linear in the calibration size; smaller sets are one group, all pairs at random.
PAIR_BATCH_PROMPTS = 1024


def _batches_of_pairs(
    pairs: np.ndarray, targets: np.ndarray, n_prompts: int, size: int, seed: int
) -> Callable[[], Iterator[Batch]]:
    import torch

    all_pairs, all_targets = torch.as_tensor(pairs), torch.as_tensor(targets)
    generator = torch.Generator().manual_seed(seed)

    def epoch() -> Iterator[Batch]:
        order = torch.randperm(len(all_pairs), generator=generator)
        if n_prompts > PAIR_BATCH_PROMPTS:
            rank = torch.randperm(n_prompts, generator=generator)
            group = rank[all_pairs[order, 0]] // PAIR_BATCH_PROMPTS
            order = order[torch.argsort(group, stable=True)]  # random within each group
        for start in range(0, len(order), size):
            picked = order[start : start + size]
            chosen = all_pairs.index_select(0, picked)
            # Score only the prompts of this batch.
            rows, local = torch.unique(chosen[:, 0], return_inverse=True)
            local_pairs = torch.column_stack([local, chosen[:, 1:]])
            yield Batch(rows, local_pairs, all_targets.index_select(0, picked))

    return epoch


def _batches_of_prompts(
    pairs: np.ndarray, targets: np.ndarray, n_prompts: int, size: int, seed: int
) -> Callable[[], Iterator[Batch]]:
    import torch

    # Each prompt's pairs, found once: `by_prompt[first[p]:first[p + 1]]` are prompt p's.
    by_prompt = np.argsort(pairs[:, 0], kind="stable")
    first = np.searchsorted(pairs[by_prompt, 0], np.arange(n_prompts + 1))
    rng = np.random.default_rng(seed)

    def epoch() -> Iterator[Batch]:
        order = rng.permutation(n_prompts)
        for start in range(0, n_prompts, size):
            rows = order[start : start + size]
            # Sorted: the pairs keep their global order, so the loss sums in a fixed order.
            chosen = np.sort(np.concatenate([by_prompt[first[p] : first[p + 1]] for p in rows]))
            if len(chosen) == 0:  # only ties or missing rewards: nothing to learn here
                continue
            rank = np.argsort(rows)
            local = rank[np.searchsorted(rows[rank], pairs[chosen, 0])]
            local_pairs = np.column_stack([local, pairs[chosen, 1:]])
            batch_targets = torch.as_tensor(targets[chosen])
            yield Batch(torch.as_tensor(rows), torch.as_tensor(local_pairs), batch_targets)

    return epoch


def _take(prompts: Any, rows: torch.Tensor) -> Any:
    import torch

    if isinstance(prompts, torch.Tensor):
        return prompts.index_select(0, rows)  # a plain copy: faster than x[rows]
    return prompts[rows.numpy()]


def predict(module: torch.nn.Module, prompts: Any, chunk: int | None = None) -> np.ndarray:
    """Scores [prompts, teachers] of `module` in eval mode, `chunk` prompts at a time (all at
    once when None); no prompts give an empty batch, so the result keeps its shape."""
    import torch

    module.eval()
    n = len(prompts)
    step = chunk or max(n, 1)
    with torch.inference_mode():
        parts = [module(prompts[start : start + step]) for start in range(0, max(n, 1), step)]
    return torch.cat(parts).cpu().numpy()


def _epoch_loss(
    module: torch.nn.Module, prompts: Any, pairs: tuple[np.ndarray, np.ndarray], chunk: int | None
) -> float:
    import torch

    scores = torch.as_tensor(predict(module, prompts, chunk))
    return float(bradley_terry_loss(scores, torch.as_tensor(pairs[0]), torch.as_tensor(pairs[1])))


def trained_state(module: torch.nn.Module) -> dict[str, Any]:
    """Copies of the tensors training changes (e.g. LoRA adapters and the head only)."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k in names}


def fit_bradley_terry(
    module: torch.nn.Module,
    data: RouterData,
    settings: FitSettings,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train `module`, which maps `data.prompts[rows]` (a feature tensor's rows, or a text
    array's) to scores [rows, teachers].

    Keeps the epoch with the lowest validation loss (the train loss without validation
    pairs); `on_epoch` receives each epoch's losses as it ends (progress bars)."""
    import torch

    train = training_pairs(data.reward, settings.tie_margin, settings.ties)
    if not (train[1] == 1).any():
        raise ValueError("no teacher pair has different rewards: nothing to learn from")
    val = (
        training_pairs(data.val_reward, settings.tie_margin, settings.ties)
        if data.has_val
        else None
    )
    if val is not None and len(val[0]) == 0:
        val = None
    torch.manual_seed(settings.seed)  # dropout (e.g. LoRA's) draws from the global generator
    make_batches = _batches_of_pairs if settings.by == "pairs" else _batches_of_prompts
    batches = make_batches(*train, len(data.prompts), settings.batch, settings.seed)
    chunk = None if settings.by == "pairs" else settings.batch
    trainable = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    best_loss, best_epoch, best_state = float("inf"), 0, trained_state(module)
    history: list[dict[str, float]] = []
    for epoch in range(settings.epochs):
        module.train()
        for batch in batches():
            scores = module(_take(data.prompts, batch.rows))
            loss = bradley_terry_loss(scores, batch.pairs, batch.targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_loss = _epoch_loss(module, data.prompts, train, chunk)
        val_loss = train_loss if val is None else _epoch_loss(module, data.val_prompts, val, chunk)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if on_epoch is not None:
            on_epoch(history[-1])
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = val_loss, epoch, trained_state(module)
        elif settings.patience is not None and epoch - best_epoch >= settings.patience:
            break
    module.load_state_dict(best_state, strict=False)
    return {
        "pairs": len(train[0]),
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "history": history,
    }


# 8. Choose


def choose_teachers(scores: np.ndarray) -> np.ndarray:
    """The teacher index per prompt from router scores [prompts, teachers]: the row's argmax
    (first on ties)."""
    return np.argmax(scores, axis=1)
