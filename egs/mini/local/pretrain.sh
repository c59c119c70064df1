#!/usr/bin/env bash
# Pretrained starting points of the mini recipes: trains the hand-designed tiny vocoder(s) on the mini
# corpus's train split long enough to make speech, and writes what the main job (egs/mini/voc1/run.sh) and
# the mini TTS recipe start from: egs/mini/pretrained/<model>/checkpoint.pt (generator + discriminator,
# as rfspeech-train saves it), the training logs, the run configs and the metrics of the eval utterances.
#
#   bash egs/mini/local/pretrain.sh                     # the shipped checkpoints (one core; see below)
#   bash egs/mini/local/pretrain.sh --ci true --out_dir /tmp/pre --work_dir /tmp/pre_work   # a few steps
#   bash egs/mini/local/pretrain.sh --help
#
# The shipped hifigan_tiny took 24 min (warm-up, 0.12 s/step) + 27 min (GAN, 0.27 s/step) on one core of a
# loaded 2-core AMD EPYC machine; see egs/mini/pretrained/README.md for its figures.
# Per model (a conf in egs/mini/local/conf/, e.g. hifigan_tiny.yaml, which also sets the step counts):
#   0  rfspeech-prepare of egs/mini/corpus with the main job's split (4 dev, 8 eval: the eval utterances
#      stay unseen)                                         -> <work_dir>/data
#   1  warm-up: reconstruction losses only (mel L1 + MR-STFT, steps.warmup)   -> <work_dir>/<model>/warmup
#   2  GAN training from the warm-up's weights (steps.gan)                     -> <work_dir>/<model>/gan
#   3  copy the last GAN checkpoint to <out_dir>/<model>/checkpoint.pt, synthesize the eval utterances and
#      evaluate them (rfspeech-synthesize, rfspeech-evaluate)               -> <out_dir>/<model>/eval/
# Seeds are fixed (--seed) and training runs with one torch thread on the CPU, so the same command makes
# the same weights on the same software. Only the package's console scripts do the work.
set -euo pipefail
export RF_RECIPE="$0"   # option errors name this script
cd "$(dirname "$0")/.."   # egs/mini: every relative path below is relative to it

models="hifigan_tiny"     # confs in local/conf/ (space-separated)
out_dir=pretrained        # where the checkpoints and their records go
work_dir=local/exp/pretrain  # training runs and data (git-ignored)
seed=1                    # training seed of every run
threads=1                 # torch threads per run
ci=false                  # true: a few steps of each run (tests); nothing below out_dir is then a real model

help_message=$(cat <<EOF
Usage: $0 [options]
Train the hand-designed tiny vocoders of the mini recipes (warm-up, then GAN) and write the pretrained
checkpoints the main job starts from. Paths are relative to egs/mini. Defaults in brackets.
  --models "M [M ...]"  confs in local/conf/ [${models}]
  --out_dir DIR         checkpoints, logs, configs and eval metrics [${out_dir}]
  --work_dir DIR        training runs and prepared data [${work_dir}]
  --seed S              training seed [${seed}]
  --threads N           torch threads per run [${threads}]
  --ci B                CI-size run: 4 warm-up + 4 GAN steps, 2 eval utterances (true|false) [${ci}]
EOF
)
# shellcheck source-path=SCRIPTDIR source=../voc1/utils/parse_options.sh
. voc1/utils/parse_options.sh

log() { echo "$(date '+%F %T') $*"; }
die() { echo "error: $*" >&2; exit 1; }

[ $# -eq 0 ] || die "unexpected argument(s): $* (options take the form --name value; see --help)"
[[ "${seed}" =~ ^[0-9]+$ ]] || die "--seed must be an integer >= 0, got '${seed}'"
[[ "${threads}" =~ ^[1-9][0-9]*$ ]] || die "--threads must be an integer >= 1, got '${threads}'"
read -r -a model_list <<< "${models}"
[ "${#model_list[@]}" -gt 0 ] || die "--models is empty"
for m in "${model_list[@]}"; do
  [ -f "local/conf/${m}.yaml" ] || die "--models: local/conf/${m}.yaml not found (see ls local/conf/)"
done
for tool in rfspeech-prepare rfspeech-train rfspeech-synthesize rfspeech-evaluate; do
  command -v "${tool}" > /dev/null || die "${tool} not found on PATH: install rfspeech (pip install -e .) and activate its environment"
done
export OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads}

# Overrides of every training run (CI: a few steps, nothing written that is not needed).
common=("hydra.searchpath=[file://${PWD}/local]" "seed=${seed}" device=cpu progress=false)
ci_train=()
ci_synth=()
ci_eval=()
if [ "${ci}" = true ]; then
  ci_train=(steps.warmup=4 steps.gan=4 train.log_interval=2 train.checkpoint_interval=2
    train.validation_interval=4 train.val_max_utts=1 tensorboard=false)
  ci_synth=(max_utts=2)
  ci_eval=("metrics=[mcd,stoi]")
fi
# last_ckpt RUN: its newest step checkpoint
last_ckpt() {
  local c
  c=$(find "$1/checkpoints" -maxdepth 1 -name 'ckpt_*.pt' 2> /dev/null | sort | tail -n 1)
  [ -n "${c}" ] || die "$1: no step checkpoint written (see $1/train.log)"
  echo "${c}"
}

log "$0 (models: ${models}; seed ${seed}; ${threads} thread(s); ci ${ci})"
data=${work_dir}/data
if [ ! -f "${data}/feats.yaml" ]; then
  log "stage 0: preparing corpus -> ${data}"
  rfspeech-prepare corpus=ljspeech db_root=corpus "out_dir=${data}" mel=hifigan corpus.dev_size=4 \
    corpus.eval_size=8 progress=false
fi

for m in "${model_list[@]}"; do
  run=${work_dir}/${m}
  mkdir -p "${run}/warmup" "${run}/gan"
  # The steps of each run come from the conf (a Hydra interpolation, resolved by rfspeech-train).
  # shellcheck disable=SC2016
  log "stage 1: ${m} warm-up (mel + MR-STFT) -> ${run}/warmup (log ${run}/warmup/train.log)"
  # shellcheck disable=SC2016
  rfspeech-train "${common[@]}" "+conf=${m}" "data_dir=${data}" "out_dir=${run}/warmup" \
    'train.max_steps=${steps.warmup}' 'train.discriminator_start_step=${steps.warmup}' "${ci_train[@]}" \
    > "${run}/warmup/train.log" 2>&1 || die "${m} warm-up failed: $(tail -n 1 "${run}/warmup/train.log")"
  warm=$(last_ckpt "${run}/warmup")
  log "stage 2: ${m} GAN training from ${warm} -> ${run}/gan (log ${run}/gan/train.log)"
  # shellcheck disable=SC2016
  rfspeech-train "${common[@]}" "+conf=${m}" "data_dir=${data}" "out_dir=${run}/gan" "init_from=${warm}" \
    'train.max_steps=${steps.gan}' "${ci_train[@]}" \
    > "${run}/gan/train.log" 2>&1 || die "${m} GAN training failed: $(tail -n 1 "${run}/gan/train.log")"
  final=$(last_ckpt "${run}/gan")

  dest=${out_dir}/${m}
  log "stage 3: ${final} -> ${dest}/checkpoint.pt; synthesizing and evaluating ${data}/eval"
  mkdir -p "${dest}/warmup" "${dest}/gan"
  cp "${final}" "${dest}/checkpoint.pt.tmp"
  mv "${dest}/checkpoint.pt.tmp" "${dest}/checkpoint.pt"
  for phase in warmup gan; do
    cp "${run}/${phase}/config.yaml" "${run}/${phase}/train.log" "${dest}/${phase}/"
  done
  rfspeech-synthesize "checkpoint=${dest}/checkpoint.pt" "input_dir=${data}/eval" "out_dir=${run}/synth" \
    threads="${threads}" progress=false "${ci_synth[@]}" > "${run}/synth.log" 2>&1 \
    || die "${m}: synthesis failed: $(tail -n 1 "${run}/synth.log")"
  rfspeech-evaluate "ref_dir=${data}/eval" "syn_dir=${run}/synth" "out_dir=${dest}/eval" \
    "feats_yaml=${data}/feats.yaml" ids_from=synthesized jobs="${threads}" progress=false "${ci_eval[@]}" \
    > "${run}/evaluate.log" 2>&1 || die "${m}: evaluation failed: $(tail -n 1 "${run}/evaluate.log")"
  {
    echo "# made by: bash egs/mini/local/pretrain.sh --models ${m} --seed ${seed} --threads ${threads} --ci ${ci}"
    echo "# $(date -u '+%F %T') UTC on $(uname -m)"
    echo "warmup_checkpoint: $(basename "${warm}")"
    echo "final_checkpoint: $(basename "${final}")"
  } > "${dest}/made_by.txt"
  log "${m}: ${dest}/checkpoint.pt; eval metrics ${dest}/eval/summary.json; eval audio ${run}/synth/"
done
log "done"
