#!/usr/bin/env bash
# The shipped study: the four questions for VRNN and SRNN on real speech (asterisk), and the
# first two for VRNN on the mini corpus for contrast; then the report (experiments/REPORT.md,
# with the answers of experiments/studies/SUMMARY.md and the runs of best_vs_default.sh).
#   bash experiments/studies/run_all.sh            # from the checkout, after `make venv-test`
#   DVAE=dvae-jax WORKERS=2 bash experiments/studies/run_all.sh
# Every study resumes where it stands when re-run (killed trials are re-queued), so the script
# can be re-run after a kill. Sweeps go to runs/sweeps/<name>/ (trials are ordinary run
# directories; not committed). The study files' base config is vrnn_mel_gaussian; SRNN asks the
# same questions of srnn_mel_gaussian (its decoder MLP included).
set -euo pipefail
DVAE=${DVAE:-.venv/bin/dvae-jax}
WORKERS=${WORKERS:-2}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
ASTERISK=(--set data.corpus=asterisk --set data.split_by=utterance)
QUESTIONS=(q1_prior q2_kl q3_epochs q4_lr)
studies=()
for q in "${QUESTIONS[@]}"; do
  "$DVAE" sweep "$q" "${ASTERISK[@]}" --set model.model=vrnn --workers "$WORKERS"
  studies+=(--study "runs/sweeps/${q}_asterisk_utterance_vrnn")
done
for q in "${QUESTIONS[@]}"; do
  "$DVAE" sweep "$q" "${ASTERISK[@]}" --base-config srnn_mel_gaussian --workers "$WORKERS"
  studies+=(--study "runs/sweeps/${q}_asterisk_utterance_srnn")
done
for q in q1_prior q2_kl; do
  "$DVAE" sweep "$q" --set model.model=vrnn --workers "$WORKERS"
  studies+=(--study "runs/sweeps/${q}_vrnn")
done
runs=()
if [ -f runs/best_vs_default/done ]; then  # default first: the report pairs each run with the first of its model
  for r in vrnn_default vrnn_best srnn_default srnn_best; do runs+=(--run "$r=runs/best_vs_default/$r"); done
fi
"$DVAE" report "${studies[@]}" "${runs[@]}" --summary experiments/studies/SUMMARY.md \
  --title "VRNN and SRNN on real speech: the four questions"
