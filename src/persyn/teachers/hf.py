"""Hugging Face transformers backend: local folder, hub id or GGUF file; batched generation."""

from __future__ import annotations

from typing import Any, ClassVar

from persyn.config import Section, TeacherConfig, backend_options
from persyn.models import chat_prompt_ids, load_causal_lm
from persyn.teachers.base import CUT_AT_LIMIT, Generation, Prompt, Teacher


class HFTeacher(Teacher):
    """Left-padded batched `generate`; one model in memory at a time (see `persyn.models`)."""

    loads_model: ClassVar[bool] = True

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__(cfg)
        # No options (model settings are teacher keys): any key is a typo, refused here.
        backend_options(Section, cfg)

    def load(self) -> None:
        self.model, self.tokenizer = load_causal_lm(self.cfg)
        self.tokenizer.padding_side = "left"
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)

    def unload(self) -> None:
        # The weights stay in the one-slot cache for a following teacher or the student.
        self.model = self.tokenizer = None

    def generate(self, prompts: list[Prompt]) -> list[Generation]:
        import torch

        gen = self.cfg.generation
        encoded = [chat_prompt_ids(self.tokenizer, self.chat(p)) for p in prompts]
        results: dict[int, Generation] = {}
        ok: list[int] = []
        for i, ids in enumerate(encoded):
            if len(ids) + gen.max_new_tokens > self.context:
                results[i] = Generation(
                    prompts[i].id,
                    error=f"prompt has {len(ids)} tokens + max_new_tokens {gen.max_new_tokens} "
                    f"> context {self.context}; shorten it or lower max_new_tokens",
                )
            else:
                ok.append(i)
        if ok:
            batch = self.tokenizer.pad(
                {"input_ids": [encoded[i] for i in ok]}, padding=True, return_tensors="pt"
            ).to(self.model.device)
            kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens}
            if gen.temperature:  # null, like 0, is greedy here
                torch.manual_seed(gen.seed)
                kwargs.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p or 1.0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                out = self.model.generate(
                    **batch, pad_token_id=self.tokenizer.pad_token_id, **kwargs
                )
            new = out[:, batch["input_ids"].shape[1] :]
            ends = self.end_tokens()
            for row, i in enumerate(ok):
                tokens = new[row].tolist()
                stop = {self.tokenizer.pad_token_id, *ends}
                n = sum(1 for t in tokens if t not in stop)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                # No end-of-answer token: generation ran until max_new_tokens cut it.
                finish = "stop" if ends.intersection(tokens) else CUT_AT_LIMIT
                results[i] = Generation(prompts[i].id, text, len(encoded[i]), n, None, finish)
        return [results[i] for i in range(len(prompts))]

    def end_tokens(self) -> set[int]:
        """The tokens that end an answer: the tokenizer's end-of-sequence and those of the
        model's generation config (chat models often have several, e.g. end of turn)."""
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ends = configured if isinstance(configured, list) else [configured]
        return {t for t in [self.tokenizer.eos_token_id, *ends] if t is not None}
