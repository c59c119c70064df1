#!/usr/bin/env bash
# Mini text-to-speech recipe: every stage on the shipped mini corpus (egs/mini/corpus: 50 short espeak-ng
# sentences, LJSpeech layout, 22.05 kHz FLAC) with a tiny conv acoustic model, hand-designed and searched,
# two seeds per arm run side by side, and a tiny HiFi-GAN vocoder, on CPU in a few minutes. Ends with
# synthesized wavs of the held-out eval sentences (exp/acoustic_tiny/<run>/synth/*.wav), MCD and duration
# error per arm, and the report (exp/acoustic_tiny/report.html); then (stages 8-10) the vocoder fine-tuned on
# each acoustic run's GTA (teacher-forced) mels, 100 steps each, and the four combinations compared
# (exp/acoustic_tiny/combinations/report.html).
#
#   bash egs/mini/tts1/run.sh                                   # everything
#   bash egs/mini/tts1/run.sh --stage 5 --stop_stage 7          # re-synthesize, evaluate, compare
#   bash egs/mini/tts1/run.sh --stage 8                         # GTA fine-tunes and the four-way comparison only
#   bash egs/mini/tts1/run.sh --gta false                       # stop after stage 7
#   bash egs/mini/tts1/run.sh --vocoder_checkpoint ""       # train the tiny vocoder in stage 5 instead
#   bash egs/mini/tts1/run.sh --vocoder_checkpoint ../voc1/exp/hifigan_tiny/hand_seed1/checkpoints/best.pt
#   bash egs/mini/tts1/run.sh --help                            # every option (egs/TEMPLATE/tts1/tts.sh)
#
# Options given here are defaults; the command line overrides them (the last value wins).
set -euo pipefail
export RF_RECIPE="$0"   # option errors and --help name this script, not ./voc.sh
cd "$(dirname "$0")"

# Two seeds per arm unless the command line chooses (--seed S runs one).
seed_opts=(--seeds "1 2")
for arg in "$@"; do
  case "${arg}" in --seed|--seed=*|--seeds|--seeds=*) seed_opts=() ;; esac
done

# 50 utterances: 6 dev (validation) and 8 eval (held-out sentences synthesized and evaluated), 36 train.
# The vocoder is the pretrained tiny HiFi-GAN (egs/mini/pretrained, made by egs/mini/local/pretrain.sh on the
# same corpus with the same 8 eval sentences held out): a few hundred steps of vocoder training buzz.
./tts.sh \
  --corpus ljspeech \
  --db_root ../corpus \
  --mel hifigan \
  --prepare_opts "corpus.dev_size=6 corpus.eval_size=8" \
  --conf conf/acoustic_tiny.yaml \
  --vocoder_conf conf/hifigan_tiny.yaml \
  --vocoder_checkpoint ../pretrained/hifigan_tiny/checkpoint.pt \
  --gta_conf conf/hifigan_tiny_gta.yaml \
  "${seed_opts[@]}" \
  --n_gpus 0 \
  --nj 2 \
  "$@"
