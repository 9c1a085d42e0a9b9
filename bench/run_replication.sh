#!/usr/bin/env bash
# The replication: PerSyn against the baselines, one student per dataset and training
# seed, paired bootstrap CIs on 300 held-out prompts; then its section of
# bench/RESULTS.md. CONFIG: examples/replication.yaml (arithmetic, the default) or
# examples/replication-instruct.yaml (instructions with verifiable constraints).
# Resumable, across sessions too: kill it and run it again, finished students and
# evaluations are reused (stored by fingerprint under bench/replication/, committed
# without the student checkpoints). Extra arguments go to `persyn experiment`, e.g.
#   bench/run_replication.sh examples/replication.yaml --set evaluation.prompts.num_prompts=100
# REPLICATION_NOTE (environment) is printed at the top of the section (e.g. "reduced").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PERSYN=${PERSYN:-.venv/bin/persyn}
CONFIG=${1:-examples/replication.yaml}
shift $(($# > 0 ? 1 : 0))
started=$(date -u +"%Y-%m-%d %H:%M UTC")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
"$PERSYN" experiment "$CONFIG" "$@"
wall=$(($(date +%s) - t0))
"$PY" bench/replication_section.py --config "$CONFIG" --started "$started" --wall-s "$wall" \
  --load "$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" \
  --note "${REPLICATION_NOTE:-}" "$@"
