"""Bradley-Terry training: reward-ordered teacher pairs, the loss, and the one training loop.

For a prompt x and teachers (a, b) with r_b > r_a, P(b beats a | x) = sigmoid(pi_b - pi_a);
training minimises the binary cross-entropy -log sigmoid(pi_b(x) - pi_a(x)) over all such
pairs of every calibration prompt. Pairs closer than `tie_margin` are ties: skipped, or
(`ties: half`) trained towards P = 0.5. Inference is one forward pass: argmax pi(x).

`fit_bradley_terry` trains every learnt router (a head over frozen features, or a language
model): AdamW on batches of pairs built once, the loss on the train and validation prompts
after each epoch, and the trained tensors of the epoch with the lowest validation loss kept
(early stopping after `patience` epochs without improvement).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from persyn.config import RouterConfig

if TYPE_CHECKING:
    import torch

EpochCallback = Callable[[dict[str, float]], None]


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


@dataclass(frozen=True)
class Schedule:
    """How a router trains: passes, step size, and what one optimiser step sees: `batch`
    random pairs (`by="pairs"`, heads: scoring a prompt is cheap), or `batch` random prompts
    with all their pairs (`by="prompts"`, language models: a prompt costs a forward pass,
    which is also the batch they are scored in for the epoch losses)."""

    epochs: int
    learning_rate: float
    batch: int
    by: Literal["pairs", "prompts"]


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


def save_trained(module: torch.nn.Module, path: Path) -> None:
    """Write the trained tensors (a frozen backbone is rebuilt from its config instead)."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(trained_state(module), tmp)
    tmp.replace(path)


def load_trained(module: torch.nn.Module, path: Path) -> None:
    """Load what `save_trained` wrote; RuntimeError when the tensors do not fit `module`."""
    import torch

    # On the CPU first: `load_state_dict` copies onto the module's device, wherever it ran.
    state = torch.load(path, weights_only=True, map_location="cpu")
    expected = {n for n, p in module.named_parameters() if p.requires_grad}
    misfits = sorted(set(state) ^ expected)
    if misfits:
        raise RuntimeError(f"{path.name}: {len(misfits)} tensors do not fit (first: {misfits[0]})")
    module.load_state_dict(state, strict=False)


def fit_bradley_terry(
    module: torch.nn.Module,
    data: RouterData,
    schedule: Schedule,
    cfg: RouterConfig,
    on_epoch: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train `module`, which maps `data.prompts[rows]` (a feature tensor's rows, or a text
    array's) to scores [rows, teachers].

    Keeps the epoch with the lowest validation loss (the train loss without validation
    pairs); `on_epoch` receives each epoch's losses as it ends (progress bars)."""
    import torch

    train = training_pairs(data.reward, cfg.tie_margin, cfg.ties)
    if not (train[1] == 1).any():
        raise ValueError("no teacher pair has different rewards: nothing to learn from")
    val = training_pairs(data.val_reward, cfg.tie_margin, cfg.ties) if data.has_val else None
    if val is not None and len(val[0]) == 0:
        val = None
    torch.manual_seed(cfg.seed)  # dropout (e.g. LoRA's) draws from the global generator
    if schedule.by == "pairs":
        batches = _batches_of_pairs(*train, len(data.prompts), schedule.batch, cfg.seed)
        chunk = None
    else:
        batches = _batches_of_prompts(*train, len(data.prompts), schedule.batch, cfg.seed)
        chunk = schedule.batch
    trainable = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=schedule.learning_rate, weight_decay=cfg.weight_decay)
    best_loss, best_epoch, best_state = float("inf"), 0, trained_state(module)
    history: list[dict[str, float]] = []
    for epoch in range(schedule.epochs):
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
        elif cfg.patience is not None and epoch - best_epoch >= cfg.patience:
            break
    module.load_state_dict(best_state, strict=False)
    return {
        "pairs": len(train[0]),
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "history": history,
    }
