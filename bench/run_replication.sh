#!/usr/bin/env bash
# The mini-replication (examples/replication.yaml): PerSyn against every baseline, one
# student per dataset, paired bootstrap CIs on 300 held-out problems; then its section of
# bench/RESULTS.md. Resumable: kill it and run it again, finished students and
# evaluations are reused (stored by fingerprint). Extra arguments go to `persyn
# experiment`, e.g. a reduced run:
#   bench/run_replication.sh --set evaluation.prompts.num_prompts=100
# REPLICATION_NOTE (environment) is printed at the top of the section (e.g. "reduced").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PERSYN=${PERSYN:-.venv/bin/persyn}
CONFIG=examples/replication.yaml
started=$(date -u +"%Y-%m-%d %H:%M UTC")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
"$PERSYN" experiment "$CONFIG" "$@"
wall=$(($(date +%s) - t0))
"$PY" bench/replication_section.py --config "$CONFIG" --started "$started" --wall-s "$wall" \
  --load "$load_before / $(cut -d' ' -f1-3 /proc/loadavg)" \
  --note "${REPLICATION_NOTE:-}" "$@"
