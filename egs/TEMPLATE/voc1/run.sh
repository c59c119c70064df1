#!/usr/bin/env bash
# Template recipe, runnable as is on any folder of 22.05 kHz wav/flac files (corpus=folder: ids from the
# paths, transcripts from sibling .txt/.lab files when present; sorted ids, dev/eval scaled as LJSpeech's).
# Copy this directory to egs/<dataset>/voc1 to add a dataset: see README.md.
#
#   ./run.sh --db_root /data/my_voice                            # HiFi-GAN V1, hand-designed vs searched
#   ./run.sh --db_root /data/my_voice --conf conf/debug.yaml --n_gpus 0   # smoke run on CPU
#   ./run.sh --help
#
# conf/ links the LJSpeech confs (22.05 kHz, hop 256). Options given here are defaults; the command line
# overrides them (the last value wins).
set -euo pipefail
export RF_RECIPE="$0"   # option errors and --help name this script, not ./voc.sh
cd "$(dirname "$0")"

./voc.sh \
  --corpus folder \
  --mel hifigan \
  --conf conf/hifigan_v1.yaml \
  "$@"
