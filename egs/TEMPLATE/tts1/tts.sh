#!/usr/bin/env bash
# rfspeech text-to-speech recipe driver: searched vs hand-designed conv acoustic models (text -> mel) on one
# corpus, same data and budget, ending in synthesized wavs of the held-out sentences and a comparison.
#
# Every egs/<dataset>/tts1/run.sh sets its dataset's defaults and calls this script (a symlink to
# egs/TEMPLATE/tts1/tts.sh). Run it from the recipe directory (run.sh changes into it): every relative path
# below is relative to that directory.
#
# The stages are the stage table below (--help prints it); the options, the stage loop, the job runner, the done
# markers and the data stages -1 to 1 are utils/lib.sh's, shared with the vocoder driver (egs/TEMPLATE/voc1/voc.sh).
# A conf may give the search run (stage 3) its own budget: steps.search, with tts.max_steps: ${steps.train}.
# Stages 5-7 also run copy-synthesis of the eval split through the vocoder (exp/<name>/vocoder_copysyn/, its
# own report): the MCD the vocoder alone costs, the floor under the acoustic models' numbers.
# Stages 8-10 (--gta true) fine-tune the vocoder on each acoustic model's GTA mels and compare the four
# combinations (vocoder on ground-truth mels vs GTA-fine-tuned, hand-designed vs searched acoustic model): the
# teacher-forced mels of train + dev through each acoustic run (MAS durations of the reference mels: exactly the
# recordings' frame count) are checked against the vocoder, then the vocoder of stage 5 is fine-tuned on them
# (--gta_conf, the same budget for every run).
# Stage 2 also records the receptive field of each hand-designed acoustic model's decoder (<run>/rf.json).
#
# Only the package's console scripts do the work (rfspeech-prepare, -train-tts, -train, -rf, -gta, -check-mels,
# -synthesize, -evaluate, -compare); each run logs to <run>/logs/<stage>.log.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=utils/lib.sh
. utils/lib.sh

# ------------------------------------------------------------------------------------------ options
common_options        # utils/lib.sh: stage, stop_stage, conf, tag, seeds, nj, cmd, corpus, mel, search, ...
vocoder_conf=""       # vocoder recipe conf (Hydra experiment YAML for rfspeech-train), stage 5
vocoder_checkpoint="" # an existing vocoder checkpoint (same features) instead of training one in stage 5
vocoder_opts=""       # extra rfspeech-train overrides (stage 5)
eval_metrics="[mcd,frame_periodicity]"  # rfspeech-evaluate metrics of the synthesized speech (periodicity: buzz check)
length_scale=1.0      # speaking rate of the synthesis (>1 slower)
copy_synthesis=true   # also synthesize and evaluate the vocoder alone on the reference mels
gta=true              # stages 8-10: GTA fine-tune the vocoder per acoustic run, compare the four combinations
gta_conf=""           # vocoder recipe conf of the GTA fine-tunes (rfspeech-train experiment YAML; "": --vocoder_conf)
gta_opts=""           # extra rfspeech-train overrides of the GTA fine-tunes (stage 8)

# ------------------------------------------------------------------------------------------ stage table
add_data_stages       # -1 download, 0 data preparation, 1 features
add_stage 2 train_stage "train" "exp/<name>/hand_seed<S>/: the hand-designed acoustic model"
add_stage 3 search_stage "search" "exp/<name>/search_seed<S>/structure.yaml: its dilated convs searched" search
add_stage 4 finetune_stage "fine-tune" "exp/<name>/searched_seed<S>/: the searched structure, same budget" search
add_stage 5 synthesize_stage "vocoder + synthesize" \
  "exp/<name>/<run>/synth/*.wav, speed.json: a vocoder (trained, or --vocoder_checkpoint), the eval sentences"
add_stage 6 evaluate_stage "evaluate" \
  "exp/<name>/<run>/eval/{metrics.csv,summary.json,eval_duration.json}: MCD (DTW), duration error, mel L1"
add_stage 7 compare_stage "compare" "exp/<name>/report.html, report.md"
add_stage 8 gta_finetune_stage "GTA fine-tune the vocoder" \
  "exp/<name>/gta_<run>/{data,vocoder}/: GTA mels of train + dev, the vocoder fine-tuned on them" gta
add_stage 9 gta_evaluate_stage "GTA synthesize + evaluate" \
  "exp/<name>/gta_<run>/{synth,eval}/: the eval sentences through each GTA vocoder" gta
add_stage 10 combinations_stage "compare the four combinations" \
  "exp/<name>/combinations/report.html, report.md" gta

# usage: the help text, printed by parse_options on --help after the options before it are parsed, so the
# defaults shown are the calling recipe's (run.sh passes its own before the command line's)
usage() {
  cat <<EOF
Usage: ${RF_RECIPE:-$0} [options]
Text-to-speech recipe: data -> features -> hand-designed acoustic model -> receptive-field search ->
fine-tune -> vocoder + synthesis of the eval sentences -> MCD and duration error -> report
(exp/<name>/report.html) -> GTA fine-tune of the vocoder per acoustic model -> the four combinations
compared (exp/<name>/combinations/report.html). Paths are relative to the recipe directory.

EOF
  stage_usage
  cat <<EOF

Options (--name value or --name=value; defaults in brackets):
  --conf F                acoustic-model recipe conf (rfspeech-train-tts experiment YAML) [${conf}]
  --vocoder_conf F        vocoder recipe conf (rfspeech-train experiment YAML), trained in stage 5 [${vocoder_conf}]
  --vocoder_checkpoint C  use this vocoder instead (its features must match) [${vocoder_checkpoint}]
  --copy_synthesis B      evaluate the vocoder alone on the reference mels too [${copy_synthesis}]
  --gta B                 stages 8-10: GTA fine-tune of the vocoder, four combinations compared [${gta}]
  --gta_conf F            vocoder recipe conf of the GTA fine-tunes (empty: --vocoder_conf) [${gta_conf}]
  --length_scale X        speaking rate of the synthesis [${length_scale}]
  --eval_metrics L        rfspeech-evaluate metrics, e.g. "[mcd,f0]" [${eval_metrics}]
  --vocoder_opts, --gta_opts "k=v ..."  extra rfspeech-train overrides of the vocoder and of the GTA fine-tunes
EOF
  common_usage
}

parse_options "$@"
recipe_init

# ------------------------------------------------------------------------------------------ checks, settings
[[ "${length_scale}" =~ ^[0-9]*\.?[0-9]+$ ]] || usage_error "--length_scale must be a positive number, got '${length_scale}'"
case "${gta}" in true|false) ;; *) usage_error "--gta must be true or false, got '${gta}'" ;; esac
case "${corpus}" in ljspeech|vctk) ;; *) usage_error "--corpus must be ljspeech or vctk (a corpus with transcripts), got '${corpus}'" ;; esac

if [ "${stop_stage}" -ge 2 ] && [ "${stage}" -le 7 ]; then
  [ -n "${conf}" ] || usage_error "--conf is empty: stages 2-7 need the acoustic-model recipe conf (e.g. conf/acoustic_tiny.yaml)"
fi
exp_name=""
hydra_conf=()
conf_root=""
if [ -n "${conf}" ]; then
  check_conf "${conf}" "conf"
  conf_group=$(basename "$(conf_dir_of "${conf}")")
  conf_base=$(basename "${conf}" .yaml)
  conf_root=$(dirname "$(conf_dir_of "${conf}")")
  hydra_conf=("hydra.searchpath=[file://${conf_root}]")
  exp_name=${conf_base}${tag:+_${tag}}
fi
# beside_conf FILE WHAT: FILE (a vocoder conf) lives in a directory beside the conf's, on the same search path
beside_conf() {
  [ "$(dirname "$(conf_dir_of "$1")")" = "${conf_root}" ] \
    || usage_error "--$2 $1: must live in a directory beside the conf's (${conf_root})"
}
voc_dir=${expdir}/${exp_name}/vocoder
if [ -n "${vocoder_checkpoint}" ]; then
  vocoder=${vocoder_checkpoint}
else
  vocoder=${voc_dir}/checkpoints/best.pt
  if run_stage 5; then
    [ -n "${vocoder_conf}" ] || usage_error "stage 5 ($(stage_name 5)): give --vocoder_conf (a vocoder to train) or --vocoder_checkpoint"
    check_conf "${vocoder_conf}" "vocoder_conf"
    beside_conf "${vocoder_conf}" vocoder_conf
    voc_group=$(basename "$(conf_dir_of "${vocoder_conf}")")
    voc_base=$(basename "${vocoder_conf}" .yaml)
  fi
fi

if [ "${gta}" = true ] && run_stage 8; then
  gta_conf=${gta_conf:-${vocoder_conf}}
  [ -n "${gta_conf}" ] || usage_error "stage 8 ($(stage_name 8)): give --gta_conf (the vocoder conf of the GTA fine-tune) or --gta false"
  check_conf "${gta_conf}" "gta_conf"
  beside_conf "${gta_conf}" gta_conf
  gta_group=$(basename "$(conf_dir_of "${gta_conf}")")
  gta_base=$(basename "${gta_conf}" .yaml)
fi

read -r -a vocoder_args <<< "${vocoder_opts}"
read -r -a gta_args <<< "${gta_opts}"
train_tts_cmd=() train_cmd=()  # set by console_cmd
console_cmd train_tts_cmd rfspeech-train-tts
console_cmd train_cmd rfspeech-train
need_tools rfspeech-prepare rfspeech-train-tts rfspeech-train rfspeech-rf rfspeech-synthesize rfspeech-evaluate \
  rfspeech-compare
if [ "${gta}" = true ] && run_stage 8; then need_tools rfspeech-gta rfspeech-check-mels; fi

# gta_run_of RUN: the GTA folder of an acoustic run (exp/<name>/gta_<run>); seed_of RUN, arm_of RUN
gta_run_of() { echo "$(dirname "$1")/gta_$(basename "$1")"; }
seed_of() { echo "${1##*_seed}"; }
arm_of() { if [[ "$1" == */searched_seed* ]]; then echo searched; else echo hand-designed; fi; }

# every trained acoustic model (hand-designed, then searched); synth_runs adds the vocoder's copy-synthesis
mapfile -t runs < <(runs_of "${exp_name}")
copysyn=${expdir}/${exp_name}/vocoder_copysyn
synth_runs=("${runs[@]}")
[ "${copy_synthesis}" = false ] || synth_runs+=("${copysyn}")
# the GTA counterpart of every acoustic run (stages 8-10) and the four-way report
gta_runs=()
for run in "${runs[@]}"; do gta_runs+=("$(gta_run_of "${run}")"); done
combinations=${expdir}/${exp_name}/combinations

# ------------------------------------------------------------------------------------------ helpers
# train_tts RUN SEED [OVERRIDES...]: one rfspeech-train-tts run of the recipe conf (the run's own overrides
# come last, so the search run keeps its budget under --train_opts "steps.train=N")
train_tts() {
  local run=$1 s=$2
  shift 2
  launch "${train_tts_cmd[@]}" "${hydra_conf[@]}" "+${conf_group}=${conf_base}" "data_dir=${feats}" "out_dir=${run}" \
    "seed=${s}" "device=${device}" "resume=${resume}" progress=false "${train_args[@]}" "$@"
}

# synthesize_run RUN: the eval sentences from text through RUN's acoustic model and the vocoder
synthesize_run() {
  launch rfspeech-synthesize "acoustic_checkpoint=$(ckpt_of "$1")" "checkpoint=${vocoder}" "input_dir=${feats}/eval" \
    "out_dir=$1/synth" "length_scale=${length_scale}" "device=${device}" progress=false "${synth_args[@]}"
}

# evaluate_run RUN [DURATIONS]: MCD (and whatever eval_metrics lists), then the duration error into the same folder
evaluate_run() {
  launch rfspeech-evaluate "ref_dir=${feats}/eval" "syn_dir=$1/synth" "out_dir=$1/eval" "metrics=${eval_metrics}" \
    "feats_yaml=${feats}/feats.yaml" "jobs=${eval_jobs}" progress=false "${eval_args[@]}"
  if [ "${2:-true}" = true ]; then
    launch rfspeech-synthesize "acoustic_checkpoint=$(ckpt_of "$1")" "input_dir=${feats}/eval" \
      "duration_eval_dir=$1/eval" out_dir=null "device=${device}" progress=false
  fi
}

# train_vocoder: rfspeech-train of the vocoder conf; the finished run is marked done so later calls reuse it
train_vocoder() {
  launch "${train_cmd[@]}" "${hydra_conf[@]}" "+${voc_group}=${voc_base}" "data_dir=${feats}" "out_dir=${voc_dir}" \
    "seed=${seed_list[0]}" "device=${device}" "resume=${resume}" progress=false "${vocoder_args[@]}"
  mark_done "${voc_dir}"
}

# record_rf RUN: the receptive field of a hand-designed run's decoder (RUN/rf.json, the report's RF column); the
# run's resolved config.yaml is rfspeech-rf's config, so the model is exactly the one trained
record_rf() {
  launch rfspeech-rf --config-dir "$(cd "$1" && pwd)" --config-name config +node=acoustic +submodule=decoder \
    +units=frames "out_dir=$1"
}

# gta_finetune RUN: RUN's teacher-forced mels of train + dev as a prepared corpus, checked against the vocoder,
# then the vocoder fine-tuned on them (init_from the stage 5 vocoder; the recordings are the targets)
gta_finetune() {
  local g rc=0
  g=$(gta_run_of "$1")
  launch rfspeech-gta "acoustic_checkpoint=$(ckpt_of "$1")" "data_dir=${feats}" "split=[train,dev]" \
    "out_dir=${g}/data" "device=${device}" progress=false
  # Parameters and value range against the vocoder and this corpus's ground-truth features: a parameter mismatch
  # also fails rfspeech-train below; a value-range finding is printed in the log and kept in check_mels.json.
  launch rfspeech-check-mels "vocoder=${vocoder}" "data_dir=${g}/data" "vocoder_data_dir=${feats}" \
    "json=${g}/data/check_mels.json" || rc=$?
  [ "${rc}" -le 1 ] || return "${rc}"
  launch "${train_cmd[@]}" "${hydra_conf[@]}" "+${gta_group}=${gta_base}" "data_dir=${g}/data" "out_dir=${g}/vocoder" \
    "init_from=${vocoder}" "seed=$(seed_of "$1")" "device=${device}" "resume=${resume}" progress=false "${gta_args[@]}"
  mark_done "${g}/vocoder"
}

# gta_evaluate RUN: the eval sentences through RUN's acoustic model and its GTA vocoder, scored like stage 6
gta_evaluate() {
  local g f
  g=$(gta_run_of "$1")
  write_info "${g}" "$(arm_of "$1") + GTA vocoder" "$(seed_of "$1")" "${exp_name}" tts
  # The report's dilation and receptive-field columns describe the acoustic model, the same as RUN's.
  for f in structure.yaml rf.json; do
    if [ -f "$1/${f}" ]; then cp "$1/${f}" "${g}/${f}"; fi
  done
  launch rfspeech-synthesize "acoustic_checkpoint=$(ckpt_of "$1")" "checkpoint=$(ckpt_of "${g}/vocoder")" \
    "input_dir=${feats}/eval" "out_dir=${g}/synth" "length_scale=${length_scale}" "device=${device}" progress=false \
    "${synth_args[@]}"
  launch rfspeech-evaluate "ref_dir=${feats}/eval" "syn_dir=${g}/synth" "out_dir=${g}/eval" "metrics=${eval_metrics}" \
    "feats_yaml=${feats}/feats.yaml" "jobs=${eval_jobs}" progress=false "${eval_args[@]}"
  launch rfspeech-synthesize "acoustic_checkpoint=$(ckpt_of "$1")" "input_dir=${feats}/eval" \
    "duration_eval_dir=${g}/eval" out_dir=null "device=${device}" progress=false
}

# ------------------------------------------------------------------------------------------ stages 2 to 10
train_stage() {
  local s run
  need "${feats}/feats.yaml" 1 2
  need "${feats}/train/utts.tsv" 1 2
  log "stage 2: training the hand-designed acoustic model (${#seed_list[@]} seed(s))"
  mkdir -p "${expdir}/${exp_name}"
  cp "${conf}" "${expdir}/${exp_name}/conf.yaml"
  for s in "${seed_list[@]}"; do
    run="${expdir}/${exp_name}/hand_seed${s}"
    write_info "${run}" hand-designed "${s}" "${exp_name}" tts
    run_job --gpu "${exp_name}/hand_seed${s}" "${run}/logs/train.log" train_tts "${run}" "${s}"
  done
  wait_runs 2
  for s in "${seed_list[@]}"; do
    run="${expdir}/${exp_name}/hand_seed${s}"
    run_job "${exp_name}/hand_seed${s}" "${run}/logs/rf.log" record_rf "${run}"
  done
  wait_runs 2
}

search_stage() {
  local s run search_budget=()
  need "${feats}/feats.yaml" 1 3
  need "${feats}/train/utts.tsv" 1 3
  # A conf with steps.train / steps.search (tts.max_steps: ${steps.train}) gives the search run its own budget.
  if grep -qE '^steps:' "${conf}"; then
    # shellcheck disable=SC2016  # a Hydra interpolation, not a shell expansion
    search_budget=('steps.train=${steps.search}')
  fi
  log "stage 3: receptive-field search of the acoustic model's dilated convs (${#seed_list[@]} seed(s))"
  for s in "${seed_list[@]}"; do
    run="${expdir}/${exp_name}/search_seed${s}"
    run_job --gpu "${exp_name}/search_seed${s}" "${run}/logs/search.log" train_tts "${run}" "${s}" search.enabled=true \
      "${search_budget[@]}" "${search_args[@]}"
  done
  wait_runs 3
  for s in "${seed_list[@]}"; do
    need "${expdir}/${exp_name}/search_seed${s}/structure.yaml" 3 3
  done
}

finetune_stage() {
  local s run structure
  need "${feats}/feats.yaml" 1 4
  for s in "${seed_list[@]}"; do need "${expdir}/${exp_name}/search_seed${s}/structure.yaml" 3 4; done
  log "stage 4: fine-tuning the searched structures with the hand-designed model's budget"
  for s in "${seed_list[@]}"; do
    run="${expdir}/${exp_name}/searched_seed${s}"
    structure="${expdir}/${exp_name}/search_seed${s}/structure.yaml"
    mkdir -p "${run}"
    cp "${structure}" "${run}/structure.yaml"
    write_info "${run}" searched "${s}" "${exp_name}" tts
    run_job --gpu "${exp_name}/searched_seed${s}" "${run}/logs/train.log" train_tts "${run}" "${s}" \
      "structure=${structure}"
  done
  wait_runs 4
}

synthesize_stage() {
  local run
  need "${feats}/eval/utts.tsv" 1 5
  for run in "${runs[@]}"; do need "$(ckpt_of "${run}")" "$(trained_in "${run}")" 5; done
  if [ -n "${vocoder_checkpoint}" ]; then
    [ -f "${vocoder}" ] || die "stage 5 ($(stage_name 5)): --vocoder_checkpoint ${vocoder} not found"
    log "stage 5: vocoder ${vocoder} (given)"
  elif is_done "${voc_dir}" && [ -f "${vocoder}" ]; then
    log "stage 5: vocoder ${vocoder} (trained before; delete ${voc_dir} to retrain)"
  else
    log "stage 5: training the vocoder (${vocoder_conf}) -> ${voc_dir}"
    run_job --gpu "${exp_name}/vocoder" "${voc_dir}/logs/train.log" train_vocoder
    wait_runs 5
    need "${vocoder}" 5 5
  fi
  log "stage 5: synthesizing the eval sentences of ${feats}/eval from text"
  run_each --gpu synthesize.log synthesize_run "${runs[@]}"
  if [ "${copy_synthesis}" = true ]; then
    write_info "${copysyn}" "vocoder copy-synthesis" null "${exp_name}" tts
    run_job --gpu "${exp_name}/vocoder_copysyn" "${copysyn}/logs/synthesize.log" rfspeech-synthesize \
      "checkpoint=${vocoder}" "input_dir=${feats}/eval" "out_dir=${copysyn}/synth" "device=${device}" progress=false
  fi
  wait_runs 5
}

evaluate_stage() {
  need_each synth/speed.json 5 6 "${synth_runs[@]}"
  log "stage 6: evaluating against ${feats}/eval (metrics ${eval_metrics} + duration error)"
  run_each evaluate.log evaluate_run "${runs[@]}"
  if [ "${copy_synthesis}" = true ]; then
    run_job "${exp_name}/vocoder_copysyn" "${copysyn}/logs/evaluate.log" evaluate_run "${copysyn}" false
  fi
  wait_runs 6
}

compare_stage() {
  local exps report
  need_each eval/summary.json 6 7 "${synth_runs[@]}"
  log "stage 7: comparing searched and hand-designed acoustic models"
  exps=$(IFS=,; echo "${runs[*]}")
  run_job "${exp_name}/compare" "${expdir}/${exp_name}/logs/compare.log" rfspeech-compare "exps=[${exps}]" \
    "out_dir=${expdir}/${exp_name}" "title='${exp_name} (${corpus}): searched vs hand-designed acoustic models'" \
    reference_arm=hand-designed "${compare_args[@]}"
  # The vocoder alone gets its own small report: its dilations are not the acoustic models'.
  if [ "${copy_synthesis}" = true ]; then
    run_job "${exp_name}/vocoder_copysyn" "${copysyn}/logs/compare.log" rfspeech-compare "exps=[${copysyn}]" \
      "out_dir=${copysyn}" "title='${exp_name} (${corpus}): vocoder copy-synthesis'" "${compare_args[@]}"
  fi
  wait_runs 7
  report=$(cd "${expdir}/${exp_name}" && pwd)
  log "results (mean ± 95% CI): MCD in dB (DTW) of the synthesized eval sentences against the recordings;"
  log "duration_mae_frames: frames per token against the MAS alignment of the reference mel; length_error:"
  log "relative utterance length error; mel_dtw_l1: predicted vs reference log-mel after DTW (no vocoder)"
  # The reports' metric tables (the "Arms" section: metrics per arm), as rfspeech-compare writes them.
  awk '/^## Arms/ { arms = 1 } arms && /^\|/ { on = 1; print; next } on { exit }' "${report}/report.md"
  if [ "${copy_synthesis}" = true ]; then
    log "the vocoder alone (copy-synthesis of the reference mels: the floor under the MCD above):"
    awk '/^## Arms/ { arms = 1 } arms && /^\|/ { on = 1; print; next } on { exit }' "${copysyn}/report.md"
  fi
  log "synthesized eval sentences: ${expdir}/${exp_name}/<run>/synth/*.wav"
  log "report: ${report}/report.html (and report.md); vocoder: ${copysyn}/report.html"
}

gta_finetune_stage() {
  local run
  need "${feats}/dev/utts.tsv" 1 8
  for run in "${runs[@]}"; do need "$(ckpt_of "${run}")" "$(trained_in "${run}")" 8; done
  [ -f "${vocoder}" ] || die "stage 8 ($(stage_name 8)): vocoder ${vocoder} not found; run stage 5 ($(stage_name 5)) first"
  log "stage 8: GTA mels of train + dev through each acoustic model; ${vocoder} fine-tuned on them (${gta_conf})"
  run_each --gpu gta.log gta_finetune "${runs[@]}"
  wait_runs 8
  for run in "${runs[@]}"; do
    log "  $(gta_run_of "${run}")/data: $(grep -m 1 '^verdict:' "${run}/logs/gta.log" || echo 'verdict: n/a')"
  done
}

gta_evaluate_stage() {
  local run
  need "${feats}/eval/utts.tsv" 1 9
  for run in "${gta_runs[@]}"; do need "${run}/vocoder/.done" 8 9; done
  log "stage 9: synthesizing and evaluating the eval sentences through each acoustic model and its GTA vocoder"
  run_each --gpu gta_evaluate.log gta_evaluate "${runs[@]}"
  wait_runs 9
}

combinations_stage() {
  local exps
  need_each eval/summary.json 6 10 "${runs[@]}"
  need_each eval/summary.json 9 10 "${gta_runs[@]}"
  log "stage 10: comparing the four combinations (vocoder on ground-truth vs GTA mels x hand-designed vs searched)"
  exps=$(IFS=,; echo "${runs[*]},${gta_runs[*]}")
  run_job "${exp_name}/combinations" "${combinations}/logs/compare.log" rfspeech-compare "exps=[${exps}]" \
    "out_dir=${combinations}" \
    "title='${exp_name} (${corpus}): vocoder on ground-truth mels vs GTA fine-tuned, hand-designed vs searched acoustic model'" \
    reference_arm=hand-designed "${compare_args[@]}"
  wait_runs 10
  log "results (mean ± 95% CI; arms without '+ GTA vocoder' use the vocoder of stage 5, trained on ground-truth mels):"
  awk '/^## Arms/ { arms = 1 } arms && /^\|/ { on = 1; print; next } on { exit }' "${combinations}/report.md"
  log "GTA fine-tunes: ${expdir}/${exp_name}/gta_<run>/vocoder (their cost: vocoder/cost.json; not in the acoustic budget)"
  log "report: $(cd "${combinations}" && pwd)/report.html (and report.md)"
}

# ------------------------------------------------------------------------------------------ run
log "$0 (stages ${stage}..${stop_stage}; experiment: ${exp_name:-none}; seeds: ${seed_list[*]}; nj ${nj})"
recipe_start=${SECONDS}
run_stages
log "finished stages ${stage}..${stop_stage} in $((SECONDS - recipe_start)) s"
