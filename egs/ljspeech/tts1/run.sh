#!/usr/bin/env bash
# LJSpeech-1.1 text-to-speech recipe: the conv acoustic model (text -> mel, MAS alignment) hand-designed vs
# RF-Next searched dilations, same data and budget, synthesized through a HiFi-GAN V1 vocoder on the same
# features; MCD (DTW) against the recordings and duration error on the eval split, then the report.
# Split: sorted ids, the last 500 utterances -> 250 dev + 250 eval (as egs/ljspeech/voc1, so the vocoder
# trained there has never seen the eval sentences).
#
#   ./run.sh                                    # download (2.6 GB), prepare, train, search, fine-tune, report
#   ./run.sh --db_root /data/LJSpeech-1.1       # an existing copy (stage -1 then skips itself)
#   ./run.sh --vocoder_checkpoint /path/to/hifigan_v1.pt   # a vocoder trained on the same features
#   ./run.sh --seeds "1 2 3" --nj 3 --n_gpus 1  # three seeds per arm, three runs at once on one GPU
#   ./run.sh --stage 2 --n_gpus 4               # DDP on 4 GPUs (tts.batch_size stays the global batch)
#   ./run.sh --db_root ../../../../shared/data/ljspeech-mini --conf conf/acoustic_debug.yaml \
#     --vocoder_conf conf/hifigan_debug.yaml --vocoder_checkpoint "" --n_gpus 0   # smoke run on CPU
#   ./run.sh --help
#
# Vocoder: unless --vocoder_checkpoint is given, stage 5 reuses ../voc1's hand-designed HiFi-GAN V1 when that
# recipe has trained it (same corpus, split and mel), else trains conf/hifigan_v1.yaml (2.5M steps: days);
# --vocoder_checkpoint "" --vocoder_conf F trains F even then.
# GTA (stages 8-10): the vocoder is fine-tuned on each acoustic run's teacher-forced mels with
# conf/hifigan_v1_gta.yaml (100k steps each), and the four combinations (vocoder on ground-truth vs GTA mels,
# hand-designed vs searched acoustic model) are compared in exp/<conf>/combinations/report.html. A command line
# with its own --vocoder_conf fine-tunes with that conf instead (unless --gta_conf is given too); --gta false
# stops after stage 7.
#
# Expected run times on one GPU (estimates, not measured here: no GPU was available when this was written):
# the 200k-step acoustic runs take about a day each on a V100-class GPU (SpeedySpeech-scale model, ~10
# steps/s counting the CPU alignment search), the 70k-step search run about half of that; stages 5-6 under an
# hour for 250 sentences. Scale out with --nj (seeds side by side) or --n_gpus N (torchrun DDP per run).
#
# Options given here are defaults; the command line overrides them (the last value wins).
set -euo pipefail
export RF_RECIPE="$0"   # option errors and --help name this script, not ./voc.sh
cd "$(dirname "$0")"

voc_opts=(--vocoder_conf conf/hifigan_v1.yaml)
gta_opts=(--gta_conf conf/hifigan_v1_gta.yaml)
for arg in "$@"; do
  case "${arg}" in --vocoder_conf|--vocoder_conf=*|--gta_conf|--gta_conf=*) gta_opts=() ;; esac
done
voc1_v1=../voc1/exp/hifigan_v1/hand_seed1/checkpoints/best.pt
if [ -f "${voc1_v1}" ]; then
  echo "$(date '+%F %T') vocoder: reusing ${voc1_v1} (egs/ljspeech/voc1); --vocoder_checkpoint overrides it"
  voc_opts=(--vocoder_checkpoint "${voc1_v1}")
fi

./tts.sh \
  --corpus ljspeech \
  --download_url https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2 \
  --db_name LJSpeech-1.1 \
  --mel hifigan \
  --conf conf/acoustic.yaml \
  "${voc_opts[@]}" \
  "${gta_opts[@]}" \
  "$@"
