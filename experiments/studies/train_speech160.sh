#!/usr/bin/env bash
# Models on the better road (issue 17): VRNN and SRNN on 160-band log-Mel of the asterisk prompts,
# the study's best settings (configs vrnn_mel160_speech / srnn_mel160_speech), 3 training seeds
# each, plus VRNN trained with scheduled sampling (3 seeds) for the
# generation study. Two runs at
# a time; each resumes after a kill. Then `dvae-jax evaluate` (NNLS inverse, Griffin-Lim 64) of
# every run on 30 test utterances: the reconstruction table with its ceiling row (DNSMOS and
# Whisper WER for seed 0 only: their cost on a 2-core CPU). Then `dvae-jax report --run` puts the
# runs side by side: experiments/results/reconstruction_speech.md.
#   bash experiments/studies/train_speech160.sh     # -> runs/speech160/<model>_s<seed>
set -euo pipefail
DVAE=${DVAE:-.venv/bin/dvae-jax}
OUT=${OUT:-runs/speech160}
SEEDS=${SEEDS:-0 1 2}
SS_SEEDS=${SS_SEEDS:-0 1 2}  # scheduled sampling seeds (SS_SEEDS=0 to save a third of the time)
N_EVAL=${N_EVAL:-30}
N_ASR=${N_ASR:-30}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
SS=(--set train.scheduled_sampling=0.5 --set train.ss_start_epochs=0 --set train.ss_ramp_epochs=20)
mkdir -p "$OUT"
train() {  # name config seed extra...
  local name=$1 config=$2 seed=$3; shift 3
  local dir="$OUT/$name"
  if [ ! -f "$dir/trained" ]; then
    "$DVAE" train --config "$config" --set train.seed="$seed" --set train.log_every_steps=0 "$@" \
      --workdir "$dir" --quiet $( [ -d "$dir/checkpoints" ] && echo --resume )
    touch "$dir/trained"
  fi
}
evaluate() {  # name extra...
  local dir="$OUT/$1"; shift
  [ -f "$dir/evaluated" ] && return 0
  "$DVAE" evaluate --workdir "$dir" --split test --n "$N_EVAL" --mel-inverse nnls --quiet "$@"
  touch "$dir/evaluated"
}
jobs_list=()
for seed in $SEEDS; do
  jobs_list+=("vrnn_s$seed vrnn_mel160_speech $seed" "srnn_s$seed srnn_mel160_speech $seed")
  if [[ " $SS_SEEDS " == *" $seed "* ]]; then jobs_list+=("vrnn_ss_s$seed vrnn_mel160_speech $seed SS"); fi
done
running=0
for job in "${jobs_list[@]}"; do
  set -- $job
  [ -f "$OUT/$1/trained" ] && continue
  if [ "${4:-}" = SS ]; then train "$1" "$2" "$3" "${SS[@]}" & else train "$1" "$2" "$3" & fi
  running=$((running + 1))
  if [ $running -ge 2 ]; then wait -n; running=$((running - 1)); fi  # a failed run stops the script
done
while [ $running -gt 0 ]; do wait -n; running=$((running - 1)); done
for job in "${jobs_list[@]}"; do
  set -- $job
  if [ "$3" = 0 ]; then evaluate "$1" --asr-n "$N_ASR"; else evaluate "$1" --no-quality; fi
done
runs=()
for job in "${jobs_list[@]}"; do set -- $job; runs+=(--run "$1=$OUT/$1"); done
"$DVAE" report --title "Models on the better road: 160-band log-Mel of real speech" \
  --out experiments/results/reconstruction_speech.md "${runs[@]}"
touch "$OUT/done"
