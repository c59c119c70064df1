#!/usr/bin/env bash
# The real-speech starting point of the tiny HiFi-GAN: the espeak-trained mini start fine-tuned on LJSpeech
# chapter LJ001 until it tracks the speaker's pitch, checked on held-out chapter LJ002, and written to
# egs/ljspeech/pretrained/hifigan_tiny/ (slim checkpoint: generator + discriminator weights, config,
# feature parameters; the log, the run config, the eval metrics and the gates).
#
#   bash egs/ljspeech/voc1/local/pretrain_tiny.sh                       # the shipped checkpoint (one core; hours)
#   bash egs/ljspeech/voc1/local/pretrain_tiny.sh --stage 3 --stop_stage 3 --step 4000  # gates of one checkpoint
#   bash egs/ljspeech/voc1/local/pretrain_tiny.sh --ci true --work_dir /tmp/w --out_dir /tmp/o   # a few steps
#
# Data (../shared/data, see its README; public domain): both folders in one LJSpeech layout (symlinks),
# rfspeech-prepare with corpus.dev_size=24 corpus.eval_size=175, i.e. sorted ids:
#   train = LJ001-0001 … LJ001-0186 (186 clips, 19.9 min), dev = LJ002-0001 … LJ002-0024 (validation),
#   eval  = LJ002-0025 … LJ002-0200 (175 clips; no LJ002-0115): never seen by any training run.
# Stages:
#   0  corpus folder + rfspeech-prepare                                   -> <work_dir>/data
#   1  phase 1: GAN fine-tune from egs/mini/pretrained/hifigan_tiny, lr 1e-3, batch 2
#      (local/conf/hifigan_tiny_lj.yaml; --steps1)                        -> <work_dir>/gan1
#   2  phase 2: from phase 1's last checkpoint, lr 2e-4, batch 8 (local/conf/hifigan_tiny_lj2.yaml; --steps2)
#                                                                         -> <work_dir>/gan2
#   3  phase 2's checkpoint of step --step (default: the last): synthesize the first --eval_utts eval clips,
#      rfspeech-evaluate (pitch lock, F0, both periodicities, MCD, STOI, PESQ), the gates -> <work_dir>/eval_<step>
#   4  slim copy of that checkpoint + its records                        -> <out_dir>/hifigan_tiny/
# Gates (issue 28), on the eval clips: F0 RMSE < 25 Hz; pitch lock (share of voiced frames within 4 Hz of a
# multiple of the 86.13 Hz frame rate) < 5 % above the recordings' own share (7-8 %: real speech crosses those
# bands by chance); frame periodicity (windowed, energy-gated) < 0.1.
set -euo pipefail
cd "$(dirname "$0")/.."   # egs/ljspeech/voc1: every relative path below is relative to it

data_root=../../../../shared/data  # ljspeech-mini + ljspeech-extra (see its README)
work_dir=exp/pretrain_tiny         # corpus, prepared data, training run, evaluations (git-ignored)
out_dir=../pretrained              # where hifigan_tiny/ goes
stage=0
stop_stage=4
steps1=10000                       # GAN steps of phase 1 (stage 1)
steps2=20000                       # GAN steps of phase 2 (stage 2)
step=last                          # phase 2's checkpoint stages 3-4 take: a step number or "last"
eval_utts=24                       # eval clips of stage 2 (the first N of the 175, sorted)
asr=false                          # stage 2 also scores PocketSphinx WER (pip install 'rfspeech[asr]')
seed=1
threads=1
resume=true                        # stage 1 continues its run when it has checkpoints
ci=false                           # true: a few steps, 2 eval clips (tests); nothing written is a real model

help_message=$(cat <<EOF
Usage: $0 [options]
Fine-tune the espeak-trained tiny HiFi-GAN on LJSpeech chapter LJ001 and check/ship it on chapter LJ002.
Paths are relative to egs/ljspeech/voc1. Defaults in brackets.
  --data_root DIR   folder holding ljspeech-mini/ and ljspeech-extra/ [${data_root}]
  --work_dir DIR    corpus, prepared data, run and evaluations [${work_dir}]
  --out_dir DIR     where hifigan_tiny/ is written [${out_dir}]
  --stage N / --stop_stage N   stages to run (0-4) [${stage}/${stop_stage}]
  --steps1 N        GAN steps of phase 1 (lr 1e-3, batch 2) [${steps1}]
  --steps2 N        GAN steps of phase 2 (lr 2e-4, batch 8) [${steps2}]
  --step N|last     phase 2's checkpoint of stages 3-4 [${step}]
  --eval_utts N     eval clips scored in stage 3 [${eval_utts}]
  --asr B           also the PocketSphinx word error rate (true|false) [${asr}]
  --seed S          training seed [${seed}]
  --threads N       torch threads [${threads}]
  --resume B        stages 1-2 continue an interrupted run (true|false) [${resume}]
  --ci B            CI-size run: 4 steps, 2 eval clips (true|false) [${ci}]
EOF
)
# shellcheck source-path=SCRIPTDIR source=../utils/parse_options.sh
. utils/parse_options.sh

log() { echo "$(date '+%F %T') $*"; }
die() { echo "error: $*" >&2; exit 1; }

[ $# -eq 0 ] || die "unexpected argument(s): $* (options take the form --name value; see --help)"
for v in stage stop_stage steps1 steps2 eval_utts seed threads; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "--${v} must be an integer >= 0, got '${!v}'"
done
[[ "${step}" =~ ^([0-9]+|last)$ ]] || die "--step must be a step number or 'last', got '${step}'"
for tool in rfspeech-prepare rfspeech-train rfspeech-synthesize rfspeech-evaluate; do
  command -v "${tool}" > /dev/null || die "${tool} not found on PATH: install rfspeech (pip install -e .)"
done
export OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads}
# the interpreter rfspeech is installed in (beside its console scripts), for the two small inline steps
python=$(dirname "$(command -v rfspeech-train)")/python
[ -x "${python}" ] || python=python3

if [ "${ci}" = true ]; then
  steps1=4
  steps2=4
  eval_utts=2
fi
data=${work_dir}/data
run1=${work_dir}/gan1
run=${work_dir}/gan2
log "$0 (stages ${stage}-${stop_stage}; ${steps1} + ${steps2} steps; seed ${seed}; ci ${ci})"
ci_train=()
if [ "${ci}" = true ]; then
  ci_train=(train.log_interval=2 train.checkpoint_interval=2 train.validation_interval=4 train.val_max_utts=1
    train.batch_size=2)
fi
# last_ckpt RUN: its newest step checkpoint
last_ckpt() {
  find "$1/checkpoints" -maxdepth 1 -name 'ckpt_*.pt' 2> /dev/null | sort | tail -n 1
}

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  for d in ljspeech-mini ljspeech-extra; do
    [ -f "${data_root}/${d}/metadata.csv" ] || die "${data_root}/${d}/metadata.csv not found (--data_root)"
  done
  corpus=${work_dir}/corpus
  mkdir -p "${corpus}/wavs"
  root=$(cd "${data_root}" && pwd)
  for d in ljspeech-mini ljspeech-extra; do
    for f in "${root}/${d}"/wavs/*.wav; do ln -sf "${f}" "${corpus}/wavs/"; done
  done
  cat "${root}/ljspeech-mini/metadata.csv" "${root}/ljspeech-extra/metadata.csv" | sort > "${corpus}/metadata.csv"
  log "stage 0: $(wc -l < "${corpus}/metadata.csv") clips -> ${data}"
  rfspeech-prepare corpus=ljspeech db_root="${corpus}" out_dir="${data}" mel=hifigan corpus.dev_size=24 \
    corpus.eval_size=175 nj="${threads}" progress=false
  first_eval=$(sed -n 2p "${data}/eval/utts.tsv" | cut -f1)
  last_train=$(tail -n 1 "${data}/train/utts.tsv" | cut -f1)
  if [ "${last_train}" != LJ001-0186 ] || [ "${first_eval%%-*}" != LJ002 ]; then
    die "unexpected split (last train ${last_train}, first eval ${first_eval}): the corpus changed?"
  fi
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  mkdir -p "${run1}"
  log "stage 1: phase 1, ${steps1} GAN steps from the espeak start -> ${run1} (log ${run1}/train.log)"
  rfspeech-train "hydra.searchpath=[file://${PWD}/local]" +conf=hifigan_tiny_lj "data_dir=${data}" \
    "out_dir=${run1}" "seed=${seed}" device=cpu progress=false tensorboard=false "resume=${resume}" \
    "steps.gan=${steps1}" "${ci_train[@]}" >> "${run1}/train.log" 2>&1 \
    || die "phase 1 failed: $(tail -n 1 "${run1}/train.log")"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  start=$(last_ckpt "${run1}")
  [ -n "${start}" ] || die "no phase-1 checkpoint in ${run1}/checkpoints (run stage 1)"
  mkdir -p "${run}"
  log "stage 2: phase 2, ${steps2} GAN steps from ${start} -> ${run} (log ${run}/train.log)"
  rfspeech-train "hydra.searchpath=[file://${PWD}/local]" +conf=hifigan_tiny_lj2 "data_dir=${data}" \
    "out_dir=${run}" "init_from=${start}" "seed=$((seed + 1))" device=cpu progress=false tensorboard=false \
    "resume=${resume}" "steps.gan=${steps2}" "${ci_train[@]}" >> "${run}/train.log" 2>&1 \
    || die "phase 2 failed: $(tail -n 1 "${run}/train.log")"
fi

if [ "${step}" = last ]; then
  ckpt=$(last_ckpt "${run}")
else
  ckpt=${run}/checkpoints/ckpt_$(printf '%08d' "${step}").pt
fi
name=$(basename "${ckpt:-none}" .pt)
ev=${work_dir}/eval_${name#ckpt_}

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  if [ -z "${ckpt}" ] || [ ! -f "${ckpt}" ]; then die "no checkpoint ${ckpt:-in ${run}/checkpoints} (run stage 2)"; fi
  log "stage 3: ${ckpt}: ${eval_utts} eval clips -> ${ev}"
  metrics="pitch,f0,frame_periodicity,lag_hop_autocorr,mcd,stoi,pesq"
  [ "${asr}" = true ] && metrics="${metrics},asr"
  rfspeech-synthesize "checkpoint=${ckpt}" "input_dir=${data}/eval" "out_dir=${ev}/wavs" max_utts="${eval_utts}" \
    threads="${threads}" progress=false > "${ev}.synth.log" 2>&1 || die "synthesis failed: $(tail -n 1 "${ev}.synth.log")"
  rfspeech-evaluate "ref_dir=${data}/eval" "syn_dir=${ev}/wavs" "out_dir=${ev}" "feats_yaml=${data}/feats.yaml" \
    "metrics=[${metrics}]" ids_from=synthesized jobs="${threads}" progress=false > "${ev}.eval.log" 2>&1 \
    || die "evaluation failed: $(tail -n 1 "${ev}.eval.log")"
  "${python}" - "${ev}/summary.json" "${ev}/gates.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["metrics"]
mean = {k: v["mean"] for k, v in s.items()}
gates = {"f0_rmse_hz": [mean["f0_rmse"], "<", 25.0], "pitch_lock_excess": [mean["pitch_lock_excess"], "<", 0.05],
         "frame_periodicity": [mean["frame_periodicity"], "<", 0.1]}
out = {k: {"value": v, "limit": lim, "pass": v is not None and v < lim} for k, (v, _, lim) in gates.items()}
out["pass"] = all(g["pass"] for g in out.values())
out["pitch_lock"] = mean["pitch_lock"]
json.dump(out, open(sys.argv[2], "w"), indent=1)
print(" ".join(f"{k} {g['value']:.4g} (< {g['limit']}: {'pass' if g['pass'] else 'FAIL'})"
               for k, g in out.items() if isinstance(g, dict)), "->", "PASS" if out["pass"] else "FAIL")
PY
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
  [ -f "${ev}/gates.json" ] || die "${ev}/gates.json missing (run stage 3 for this checkpoint)"
  dest=${out_dir}/hifigan_tiny
  mkdir -p "${dest}/eval" "${dest}/gan1" "${dest}/gan2"
  log "stage 4: ${ckpt} -> ${dest}/checkpoint.pt (generator + discriminator weights)"
  "${python}" - "${ckpt}" "${dest}/checkpoint.pt" <<'PY'
import sys
from rfspeech.inference.loading import load_checkpoint
from rfspeech.train.checkpoint import save_checkpoint
state = load_checkpoint(sys.argv[1], map_location="cpu")
keep = ("generator", "discriminator", "config", "feature_params", "structure", "structure_mode", "step", "epoch")
save_checkpoint(sys.argv[2], {k: state[k] for k in keep if k in state})
PY
  cp "${ev}/summary.json" "${ev}/metrics.csv" "${ev}/gates.json" "${dest}/eval/"
  for phase in gan1 gan2; do
    cp "${work_dir}/${phase}/config.yaml" "${work_dir}/${phase}/train.log" "${dest}/${phase}/"
    if [ -f "${work_dir}/${phase}/cost.json" ]; then cp "${work_dir}/${phase}/cost.json" "${dest}/${phase}/"; fi
  done
  {
    echo "# made by: bash egs/ljspeech/voc1/local/pretrain_tiny.sh --steps1 ${steps1} --steps2 ${steps2} --step ${step} --seed ${seed} --threads ${threads} --eval_utts ${eval_utts} --ci ${ci}"
    echo "# $(date -u '+%F %T') UTC on $(uname -m)"
    echo "checkpoint: ${name}"
    echo "init_from: egs/mini/pretrained/hifigan_tiny/checkpoint.pt"
  } > "${dest}/made_by.txt"
  log "done: ${dest}/checkpoint.pt ($(du -h "${dest}/checkpoint.pt" | cut -f1)); gates ${dest}/eval/gates.json"
fi
