#!/usr/bin/env bash
# PerSyn vs baselines on the offline demo (reduced setting, see examples/experiment-demo.yaml).
# Reuses a finished `persyn demo` run (runs/demo), running it first when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f runs/demo/dataset.jsonl ] || persyn demo --run-dir runs/demo --quiet
/usr/bin/time -v persyn experiment examples/experiment-demo.yaml 2> >(grep -E "Elapsed|Maximum resident" >&2)
cat runs/experiment-demo/results.md
