#!/usr/bin/env bash
# LJSpeech-1.1 recipe: HiFi-GAN V1/V2/V3 and a ParallelWaveGAN-style WaveNet, hand-designed vs RF-Next
# searched dilations, with the published training hyper-parameters (conf/*.yaml). Split: sorted ids, the
# last 500 utterances -> 250 dev + 250 eval (the common vocoder convention; never score the official
# HiFi-GAN checkpoints on it: their 150-utterance validation set overlaps it).
#
#   ./run.sh                                    # download (2.6 GB), prepare, V1 baseline, search, fine-tune, report
#   ./run.sh --db_root /data/LJSpeech-1.1       # use an existing copy (stage -1 then skips itself)
#   ./run.sh --conf "conf/hifigan_v2.yaml conf/wavenet.yaml" --seeds "1 2 3" --nj 3 --n_gpus 1
#   ./run.sh --stage 2 --n_gpus 4               # DDP on 4 GPUs (train.batch_size stays the global batch)
#   ./run.sh --nj 8 --n_gpus 4 --gpu_cmd "srun -p gpu --gres=gpu:4 -c 32"   # Slurm: 8 jobs at once
#   ./run.sh --db_root ../../../../shared/data/ljspeech-mini --conf conf/debug.yaml --n_gpus 0   # smoke run
#   ./run.sh --help
#
# Options given here are defaults; the command line overrides them (the last value wins). See README.md
# for run times and scaling out.
set -euo pipefail
export RF_RECIPE="$0"   # option errors and --help name this script, not ./voc.sh
cd "$(dirname "$0")"

./voc.sh \
  --corpus ljspeech \
  --download_url https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2 \
  --db_name LJSpeech-1.1 \
  --mel hifigan \
  --conf conf/hifigan_v1.yaml \
  "$@"
