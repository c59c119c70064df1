#!/usr/bin/env bash
# The CPU studies of docs/results/ (one core, about an hour each on a loaded 2-core machine): the real-speech
# study (conf/study_tiny.yaml: hand-designed V1 dilations vs searched, from the mini recipe's pretrained
# model) and the repair study (conf/repair_tiny.yaml: MRF dilations 5x V1's, flagged by rfspeech-rf;
# continued vs searched), 3 seeds per arm, then one extra report that puts the repair study's arms beside the study's hand-designed V1 runs.
#   local/cpu_study.sh [--db_root DIR] [--stage N] [--stop_stage M] [--seeds "1 2 3"] [--nj 3] [--resume true]
#                      [--confs "study_tiny repair_tiny"] [--strategies "rfnext dcls"]
# --strategies: the searched arms (rfnext: RF-Next, arm "searched"; dcls: learned spacings, arm "dcls",
# needs pip install 'rfspeech[dcls]'), as ./run.sh --strategies.
# --nj: runs at once (one thread each); the studies of docs/results/ ran as two calls side by side,
# --confs study_tiny --nj 3 and --confs repair_tiny --nj 3.
# Run from egs/ljspeech/voc1. Each conf is a separate ./run.sh call (exp/<conf>/report.md).
set -euo pipefail
cd "$(dirname "$0")/.."

db_root=/work/shared/data/ljspeech-mini
stage=0
stop_stage=7
seeds="1 2 3"
confs="study_tiny repair_tiny"
nj=1
resume=false
strategies=rfnext
while [ $# -gt 0 ]; do
  case "$1" in
    --db_root) db_root=$2 ;;
    --stage) stage=$2 ;;
    --stop_stage) stop_stage=$2 ;;
    --seeds) seeds=$2 ;;
    --confs) confs=$2 ;;
    --nj) nj=$2 ;;
    --resume) resume=$2 ;;
    --strategies) strategies=$2 ;;
    *) echo "error: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift 2
done

for c in ${confs}; do
  ./run.sh --db_root "${db_root}" --prepare_opts "corpus.dev_size=2 corpus.eval_size=8" \
    --conf "conf/${c}.yaml" --seeds "${seeds}" --n_gpus 0 --nj "${nj}" --threads 1 --checkpoint last \
    --strategies "${strategies}" --stage "${stage}" --stop_stage "${stop_stage}" --resume "${resume}"
done

# The repair study beside the hand-designed V1 dilations (same data, start and budget): does the search repair it?
# (Written by whichever call finishes last when the two studies run side by side, e.g. --confs study_tiny and
# --confs repair_tiny in two shells.)
runs=()
for s in ${seeds}; do runs+=("exp/study_tiny/hand_seed${s}"); done
for st in ${strategies}; do
  arm=searched
  [ "${st}" = rfnext ] || arm=${st}
  for s in ${seeds}; do runs+=("exp/repair_tiny/${arm}_seed${s}"); done
done
ready=true
for r in "${runs[@]}"; do [ -f "${r}/eval/summary.json" ] || ready=false; done
if [ "${stop_stage}" -ge 7 ] && [ "${ready}" = true ]; then
  exps=$(IFS=,; echo "${runs[*]}")
  rfspeech-compare "exps=[${exps}]" out_dir=exp/repair_vs_v1 \
    "title='Repair study: searched from mis-designed [5,15,25] vs hand-designed V1 [1,3,5] (ljspeech-mini)'"
fi
