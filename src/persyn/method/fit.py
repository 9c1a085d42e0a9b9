"""Steps 6 to 8 of the method (see `persyn.method`): the Bradley-Terry loss, the training
loop of every learnt router, and the choice of teachers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from persyn.method.rewards import training_pairs

if TYPE_CHECKING:
    import torch

EpochCallback = Callable[[dict[str, float]], None]


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
    """Calibration prompts with every teacher's reward [prompts, teachers] (NaN: missing,
    -inf: the answer failed), and optionally held-out ones for early stopping. Prompts are
    texts, or what a model reads. `failure_reward` is what a failed answer is charged by
    routers that average rewards (`failure_reward` in `persyn.method.rewards`)."""

    prompts: Any
    reward: np.ndarray
    val_prompts: Any = None
    val_reward: np.ndarray | None = None
    failure_reward: float = 0.0

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
            return replace(self, prompts=prepare(self.prompts), val_prompts=None)
        return replace(self, prompts=prepare(self.prompts), val_prompts=prepare(self.val_prompts))


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


def predict(
    module: torch.nn.Module,
    prompts: Any,
    chunk: int | None = None,
    apply: Callable[[Any], Any] | None = None,
) -> np.ndarray:
    """Scores [prompts, teachers] of `module` in eval mode, `chunk` prompts at a time (all at
    once when None); no prompts give an empty batch, so the result keeps its shape.
    `apply`: what to call on each chunk instead of `module` (one of its methods, e.g. the
    LM router's `embed`, the vectors its head reads); its output then."""
    import torch

    module.eval()
    call = apply or module
    n = len(prompts)
    step = chunk or max(n, 1)
    with torch.inference_mode():
        parts = [call(prompts[start : start + step]) for start in range(0, max(n, 1), step)]
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

    Keeps the epoch with the lowest validation loss. Without validation pairs nothing
    held out can choose an epoch: the last one is kept (`patience` then stops on the
    training loss), which is how a router is refit on train + validation for the number
    of epochs validation chose. `on_epoch` receives each epoch's losses as it ends."""
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
    if val is None:  # the last epoch's weights stay
        best_epoch, best_loss = len(history) - 1, history[-1]["val_loss"]
    else:
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
