#!/usr/bin/env bash
# Mini recipe, the main job: every stage on the shipped mini corpus (egs/mini/corpus: 50 short espeak-ng
# sentences, LJSpeech layout, 22.05 kHz FLAC) with the tiny HiFi-GAN, hand-designed vs searched, two seeds
# per arm, both arms fine-tuned from the same pretrained model (egs/mini/pretrained/hifigan_tiny, made by
# egs/mini/local/pretrain.sh) with the same budget, on CPU. Ends by printing where the report is
# (exp/hifigan_tiny/report.html).
#
#   bash egs/mini/voc1/run.sh                         # everything (the main job)
#   bash egs/mini/voc1/run.sh --conf "conf/hifigan_tiny.yaml conf/wavenet_tiny.yaml"   # + the tiny WaveNet
#   bash egs/mini/voc1/run.sh --from_scratch true     # both arms from scratch (buzz at this budget)
#   bash egs/mini/voc1/run.sh --conf conf/ci.yaml     # CI smoke run (tiny HiFi-GAN, a few steps)
#   bash egs/mini/voc1/run.sh --stage 5 --stop_stage 7 --seeds "1"
#   bash egs/mini/voc1/run.sh --help                  # every option (egs/TEMPLATE/voc1/voc.sh)
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

./voc.sh \
  --corpus ljspeech \
  --db_root ../corpus \
  --mel hifigan \
  --prepare_opts "corpus.dev_size=4 corpus.eval_size=8" \
  --conf conf/hifigan_tiny.yaml \
  "${seed_opts[@]}" \
  --n_gpus 0 \
  --nj 2 \
  "$@"
