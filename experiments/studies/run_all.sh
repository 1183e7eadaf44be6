#!/usr/bin/env bash
# The shipped study: the four questions for VRNN and SRNN on real speech (asterisk), and the
# first two for VRNN on the mini corpus for contrast; then the report (experiments/REPORT.md).
#   bash experiments/studies/run_all.sh            # from the checkout, after `make venv-test`
#   DVAE=dvae-jax WORKERS=2 bash experiments/studies/run_all.sh
# Every study resumes where it stands when re-run (killed trials are re-queued). Sweeps go to
# runs/sweeps/<name>/ (trials are ordinary run directories; not committed).
set -euo pipefail
DVAE=${DVAE:-.venv/bin/dvae-jax}
WORKERS=${WORKERS:-2}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
ASTERISK=(--set data.corpus=asterisk --set data.split_by=utterance)
studies=()
for model in vrnn srnn; do
  for q in q1_prior q2_kl q3_epochs q4_lr; do
    "$DVAE" sweep "$q" "${ASTERISK[@]}" --set model.model=$model --workers "$WORKERS"
    studies+=(--study "runs/sweeps/${q}_asterisk_utterance_${model}")
  done
done
for q in q1_prior q2_kl; do
  "$DVAE" sweep "$q" --set model.model=vrnn --workers "$WORKERS"
  studies+=(--study "runs/sweeps/${q}_vrnn")
done
"$DVAE" report "${studies[@]}" --title "VRNN and SRNN on real speech: the four questions"
