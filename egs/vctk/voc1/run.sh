#!/usr/bin/env bash
# VCTK 0.92 recipe (109 speakers, 44 h): audio resampled 48 -> 24 kHz, mel with fft 2048, hop 300, win 1200
# (recipes/mel/hifigan_24k.yaml); HiFi-GAN V1/V2/V3 with 24 kHz upsampling ([5,5,4,3] for V1/V2) and a
# ParallelWaveGAN-style WaveNet ([4,5,3,5]), hand-designed vs RF-Next searched. Split: the last 10 + 10
# utterances of every speaker -> dev + eval (--prepare_opts "corpus.holdout_speakers=4" adds unseen speakers).
# The 0.92 layout (wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac) and the older 0.80 one (wav48/) both work.
#
#   ./run.sh                                    # download (11 GB zip), prepare, V1 baseline, search, fine-tune, report
#   ./run.sh --db_root /data/VCTK-Corpus-0.92   # existing copy
#   ./run.sh --conf "conf/hifigan_v2.yaml conf/wavenet.yaml" --seeds "1 2" --nj 2
#   ./run.sh --help
#
# Options given here are defaults; the command line overrides them (the last value wins). See README.md.
set -euo pipefail
export RF_RECIPE="$0"   # option errors and --help name this script, not ./voc.sh
cd "$(dirname "$0")"

./voc.sh \
  --corpus vctk \
  --download_url https://datashare.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip \
  --db_name VCTK-Corpus-0.92 \
  --mel hifigan_24k \
  --conf conf/hifigan_v1.yaml \
  "$@"
