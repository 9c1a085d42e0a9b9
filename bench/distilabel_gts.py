"""Generate-then-Select's generation half with distilabel: every teacher answers every prompt.

Run by `bench/rtg_vs_gts.py` in the benchmark's own environment (`make bench-env`: a
separate venv with `distilabel[openai]`, so distilabel never enters persyn's own), on the
same prompts and against the same llama.cpp servers as persyn. Selection by the reward is
done afterwards by persyn's scoring, so both sides keep the best answer by the same reward.

The distilabel pipeline is the usual fan-out: one `LoadDataFromDicts` feeding one task per
teacher, each a leaf of the pipeline. LLM teachers (`backend: openai` in the run config) are
`TextGeneration` tasks with an `OpenAILLM` on the teacher's `base_url`, the teacher's system
prompt and the same greedy decoding settings; programmatic teachers (`backend: scripted`)
are a small custom step calling persyn's scripted backend. Writes one JSONL row per
(prompt, teacher): `prompt_id`, `teacher`, `text`, `completion_tokens`, `error`.

    python bench/distilabel_gts.py --config run/config.yaml --prompts run/prompts.jsonl \
        --out generations.jsonl --cache-dir /tmp/distilabel-cache
"""

# No `from __future__ import annotations`: distilabel reads the `StepInput` hint of
# `process` at run time to wire the step.
import argparse
import json
from pathlib import Path
from typing import Any

from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts, Step, StepInput
from distilabel.steps.tasks import TextGeneration
from distilabel.typing import StepOutput

from persyn.config import TeacherConfig, load_config
from persyn.teachers.base import Prompt, make_teacher

# llama.cpp's server needs no key, but the client refuses to start without one.
NO_KEY = "no-key"


class ScriptedGeneration(Step):
    """A programmatic teacher (persyn's `scripted` backend) as a distilabel step."""

    teacher: dict[str, Any]

    @property
    def inputs(self) -> list[str]:
        return ["prompt_json"]

    @property
    def outputs(self) -> list[str]:
        return ["generation", "completion_tokens"]

    def process(self, inputs: StepInput) -> StepOutput:  # type: ignore[override]
        backend = make_teacher(TeacherConfig.model_validate(self.teacher))
        prompts = [Prompt.from_row(json.loads(row["prompt_json"])) for row in inputs]
        for row, generation in zip(inputs, backend.generate(prompts), strict=True):
            row["generation"] = None if generation.error else generation.text
            row["completion_tokens"] = generation.completion_tokens
        yield inputs


def teacher_step(teacher: TeacherConfig, batch_size: int) -> Step:
    """The distilabel step that makes `teacher` answer every prompt."""
    # Step names become folder names; persyn's teacher names are already file-name safe.
    name = f"generate-{teacher.name}"
    if teacher.backend == "scripted":
        return ScriptedGeneration(
            name=name, teacher=teacher.model_dump(mode="json"), input_batch_size=batch_size
        )
    if teacher.backend != "openai":
        raise SystemExit(f"teacher {teacher.name!r}: backend {teacher.backend!r} is not served")
    gen = teacher.generation
    llm = OpenAILLM(
        model=teacher.model,
        base_url=teacher.options["base_url"],
        api_key=NO_KEY,
        generation_kwargs={
            "max_new_tokens": gen.max_new_tokens,
            "temperature": gen.temperature,
            "top_p": gen.top_p,
        },
    )
    return TextGeneration(
        name=name,
        llm=llm,
        system_prompt=teacher.system_prompt,
        input_batch_size=batch_size,
        add_raw_input=False,
        add_raw_output=False,
    )


def output_rows(teacher: TeacherConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per prompt in persyn's generation-log shape (text stripped, as persyn's
    openai backend does; tokens from the server's `usage` for LLM teachers)."""
    out = []
    for row in rows:
        text = row["generation"]
        if teacher.backend == "scripted":
            tokens = row["completion_tokens"]
        else:
            stats = row["distilabel_metadata"][f"statistics_generate-{teacher.name}"]
            tokens = stats["output_tokens"] if text else 0
        out.append(
            {
                "prompt_id": row["prompt_id"],
                "teacher": teacher.name,
                "text": (text or "").strip(),
                "completion_tokens": tokens,
                "error": None if text else "distilabel returned no generation",
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="persyn run config (YAML)")
    parser.add_argument("--prompts", required=True, help="persyn prompts.jsonl")
    parser.add_argument("--out", required=True, help="JSONL of generations to write")
    parser.add_argument("--cache-dir", required=True, help="distilabel's pipeline cache")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per task batch")
    args = parser.parse_args()

    cfg = load_config(args.config)
    rows = [json.loads(line) for line in Path(args.prompts).read_text().splitlines() if line]
    data = [
        {
            "prompt_id": row["id"],
            # the demo prompts are one user turn, which TextGeneration takes as `instruction`
            "instruction": row["messages"][-1]["content"],
            # JSON text: the rows' `meta` differ by task kind, a nested column would not fit
            # one Arrow schema
            "prompt_json": json.dumps(row),
        }
        for row in rows
    ]
    with Pipeline(name="gts-distilabel", cache_dir=args.cache_dir) as pipeline:
        load = LoadDataFromDicts(data=data, batch_size=args.batch_size)
        for teacher in cfg.teachers:
            load >> teacher_step(teacher, args.batch_size)
    distiset = pipeline.run(use_cache=False)

    out = []
    for teacher in cfg.teachers:
        out += output_rows(teacher, list(distiset[f"generate-{teacher.name}"]["train"]))
    Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))


if __name__ == "__main__":
    main()
