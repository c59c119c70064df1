#!/usr/bin/env bash
# rfspeech text-to-speech recipe driver: searched vs hand-designed conv acoustic models (text -> mel) on one
# corpus, same data and budget, ending in synthesized wavs of the held-out sentences and a comparison.
#
# Every egs/<dataset>/tts1/run.sh sets its dataset's defaults and calls this script (a symlink to
# egs/TEMPLATE/tts1/tts.sh). Run it from the recipe directory (run.sh changes into it): every relative path
# below is relative to that directory.
#
# Stages (each runnable alone: --stage N --stop_stage M):
#   -1  download the corpus (skipped when --db_root already holds it)
#    0  data preparation: splits and manifests            -> data/prep/{train,dev,eval}/utts.tsv
#    1  features (+ statistics when the mel normalises)    -> data/<mel>/ (feats.yaml, */feats/*.npy)
#    2  train the hand-designed acoustic model             -> exp/<name>/hand_seed<S>/
#    3  receptive-field search of its dilated convs        -> exp/<name>/search_seed<S>/structure.yaml
#        (a conf may give the search run its own budget: steps.search, with tts.max_steps: ${steps.train})
#    4  fine-tune the searched structure, same budget      -> exp/<name>/searched_seed<S>/
#    5  vocoder (train a small one, or --vocoder_checkpoint), then synthesize the eval sentences from text
#                                                          -> exp/<name>/<run>/synth/*.wav, speed.json
#    6  evaluate: MCD (DTW) against the recordings; duration error and mel L1 after DTW against the reference
#       features                                           -> exp/<name>/<run>/eval/{metrics.csv,summary.json,
#                                                             eval_duration.json}
#    7  compare                                            -> exp/<name>/report.html, report.md
# Stages 5-7 also run copy-synthesis of the eval split through the vocoder (exp/<name>/vocoder_copysyn/, its
# own report): the MCD the vocoder alone costs, the floor under the acoustic models' numbers.
# Stages 8-10 (--gta true) fine-tune the vocoder on each acoustic model's GTA mels and compare the four
# combinations (vocoder on ground-truth mels vs GTA-fine-tuned, hand-designed vs searched acoustic model):
#    8  GTA fine-tune the vocoder: teacher-forced mels of train + dev through each acoustic run (MAS durations
#       of the reference mels: exactly the recordings' frame count), checked against the vocoder, then the
#       vocoder of stage 5 fine-tuned on them (--gta_conf, the same budget for every run)
#                                                          -> exp/<name>/gta_<run>/{data,vocoder}/
#    9  synthesize the eval sentences from text through each acoustic model and its GTA vocoder, evaluate
#                                                          -> exp/<name>/gta_<run>/{synth,eval}/
#   10  compare the four combinations                      -> exp/<name>/combinations/report.html, report.md
# Stage 2 also records the receptive field of each hand-designed acoustic model's decoder (<run>/rf.json).
#
# Only the package's console scripts do the work (rfspeech-prepare, -train-tts, -train, -rf, -gta, -check-mels,
# -synthesize, -evaluate, -compare); each run logs to <run>/logs/<stage>.log.
set -euo pipefail

# ------------------------------------------------------------------------------------------ options
stage=-1              # first stage to run
stop_stage=100        # last stage to run
conf=""               # acoustic-model recipe conf (Hydra experiment YAML for rfspeech-train-tts)
vocoder_conf=""       # vocoder recipe conf (Hydra experiment YAML for rfspeech-train), stage 5
vocoder_checkpoint="" # an existing vocoder checkpoint (same features) instead of training one in stage 5
tag=""                # suffix of the experiment name: exp/<conf name>_<tag>
resume=false          # continue interrupted training runs from their newest checkpoint
n_gpus=1              # 0: CPU; 1: one GPU (CPU when none); >1: torchrun DDP over n_gpus GPUs of this node
db_root=""            # corpus root (empty: <download_dir>/<db_name>)
seed=1                # seed of the single run per arm
seeds=""              # several seeds per arm, e.g. "1 2 3" (overrides --seed)
nj=1                  # runs at once (seeds, arms): useful on CPU and on multi-GPU nodes
threads=0             # torch threads per run (0: nproc / nj when nj > 1, else torch's default)
corpus=ljspeech       # rfspeech-prepare corpus with transcripts: ljspeech | vctk
db_name=""            # directory name of the downloaded corpus (default: basename of db_root)
download_url=""       # stage -1 archive (.tar.bz2, .tar.gz, .zip)
download_dir=downloads
mel=hifigan           # feature parameters: recipes/mel/<mel>.yaml (data/<mel>/)
prepare_opts=""       # extra rfspeech-prepare overrides (stages 0 and 1)
train_opts=""         # extra rfspeech-train-tts overrides (stages 2, 3 and 4)
search_opts=""        # extra rfspeech-train-tts overrides of the search run only (stage 3)
vocoder_opts=""       # extra rfspeech-train overrides (stage 5)
synth_opts=""         # extra rfspeech-synthesize overrides (stage 5)
eval_opts=""          # extra rfspeech-evaluate overrides (stage 6)
compare_opts=""       # extra rfspeech-compare overrides (stage 7)
eval_metrics="[mcd,frame_periodicity]"  # rfspeech-evaluate metrics of the synthesized speech (periodicity: buzz check)
length_scale=1.0      # speaking rate of the synthesis (>1 slower)
search=true           # false: hand-designed arm only (stages 3 and 4 skipped)
copy_synthesis=true   # also synthesize and evaluate the vocoder alone on the reference mels
checkpoint=best       # acoustic checkpoint synthesized: best (validation mel L1) | last
gta=true              # stages 8-10: GTA fine-tune the vocoder per acoustic run, compare the four combinations
gta_conf=""           # vocoder recipe conf of the GTA fine-tunes (rfspeech-train experiment YAML; "": --vocoder_conf)
gta_opts=""           # extra rfspeech-train overrides of the GTA fine-tunes (stage 8)
datadir=data
expdir=exp

# usage: the help text, printed by parse_options.sh on --help after the options before it are parsed, so the
# defaults shown are the calling recipe's (run.sh passes its own before the command line's)
usage() {
  cat <<EOF
Usage: ${RF_RECIPE:-$0} [options]
Text-to-speech recipe: data -> features -> hand-designed acoustic model -> receptive-field search ->
fine-tune -> vocoder + synthesis of the eval sentences -> MCD and duration error -> report
(exp/<name>/report.html) -> GTA fine-tune of the vocoder per acoustic model -> the four combinations
compared (exp/<name>/combinations/report.html). Paths are relative to the recipe directory.

Options (--name value or --name=value; defaults in brackets):
  --stage N               first stage: -1 download, 0 data, 1 features, 2 train, 3 search, 4 fine-tune,
                          5 vocoder + synthesize, 6 evaluate, 7 compare, 8 GTA fine-tune the vocoder,
                          9 GTA synthesize + evaluate, 10 compare the four combinations [${stage}]
  --stop_stage N          last stage [${stop_stage}]
  --conf F                acoustic-model recipe conf (rfspeech-train-tts experiment YAML) [${conf}]
  --vocoder_conf F        vocoder recipe conf (rfspeech-train experiment YAML), trained in stage 5 [${vocoder_conf}]
  --vocoder_checkpoint C  use this vocoder instead (its features must match) [${vocoder_checkpoint}]
  --tag T                 experiment name suffix: exp/<conf name>_T [${tag}]
  --resume B              continue interrupted training (true|false) [${resume}]
  --n_gpus N              0 CPU, 1 one GPU, >1 torchrun DDP [${n_gpus}]
  --db_root DIR           corpus root [${db_root:-<download_dir>/<db_name>}]
  --seed S                seed of the single run per arm [${seed}]
  --seeds "S [S ...]"     several seeds per arm (overrides --seed) [${seeds}]
  --nj N                  runs at once [${nj}]
  --threads N             torch threads per run, 0 automatic [${threads}]
  --corpus C              ljspeech | vctk [${corpus}]
  --mel M                 recipes/mel/M.yaml [${mel}]
  --search B              run the searched arm (stages 3-4) [${search}]
  --copy_synthesis B      evaluate the vocoder alone on the reference mels too [${copy_synthesis}]
  --checkpoint C          best | last [${checkpoint}]
  --gta B                 stages 8-10: GTA fine-tune of the vocoder, four combinations compared [${gta}]
  --gta_conf F            vocoder recipe conf of the GTA fine-tunes (empty: --vocoder_conf) [${gta_conf}]
  --length_scale X        speaking rate of the synthesis [${length_scale}]
  --eval_metrics L        rfspeech-evaluate metrics, e.g. "[mcd,f0]" [${eval_metrics}]
  --prepare_opts, --train_opts, --search_opts, --vocoder_opts, --gta_opts, --synth_opts, --eval_opts,
  --compare_opts "k=v ..."
                          extra overrides of the console scripts
  --download_url U, --download_dir D, --db_name N, --datadir D, --expdir D
EOF
}

# shellcheck source-path=SCRIPTDIR source=utils/parse_options.sh
. utils/parse_options.sh

# shellcheck source-path=SCRIPTDIR source=utils/lib.sh
. utils/lib.sh
stage_names[5]="vocoder + synthesize"
stage_names[8]="GTA fine-tune the vocoder"
stage_names[9]="GTA synthesize + evaluate"
stage_names[10]="compare the four combinations"

# ------------------------------------------------------------------------------------------ helpers
# train_tts RUN SEED [OVERRIDES...]: one rfspeech-train-tts run of the recipe conf (the run's own overrides
# come last, so the search run keeps its budget under --train_opts "steps.train=N")
train_tts() {
  local run=$1 s=$2
  shift 2
  "${train_tts_cmd[@]}" "${hydra_conf[@]}" "+${conf_group}=${conf_base}" "data_dir=${feats}" "out_dir=${run}" \
    "seed=${s}" "device=${device}" "resume=${resume}" progress=false "${train_args[@]}" "$@"
}

# synthesize_run RUN: the eval sentences from text through RUN's acoustic model and the vocoder
synthesize_run() {
  rfspeech-synthesize "acoustic_checkpoint=$(ckpt_of "$1")" "checkpoint=${vocoder}" "input_dir=${feats}/eval" \
    "out_dir=$1/synth" "length_scale=${length_scale}" "device=${device}" progress=false "${synth_args[@]}"
}

# evaluate_run RUN [DURATIONS]: MCD (and whatever eval_metrics lists), then the duration error into the same folder
evaluate_run() {
  rfspeech-evaluate "ref_dir=${feats}/eval" "syn_dir=$1/synth" "out_dir=$1/eval" "metrics=${eval_metrics}" \
    "feats_yaml=${feats}/feats.yaml" "jobs=${eval_jobs}" progress=false "${eval_args[@]}"
  if [ "${2:-true}" = true ]; then
    rfspeech-synthesize "acoustic_checkpoint=$(ckpt_of "$1")" "input_dir=${feats}/eval" "duration_eval_dir=$1/eval" \
      out_dir=null "device=${device}" progress=false
  fi
}

# train_vocoder: rfspeech-train of the vocoder conf; a finished run is marked so later calls reuse it
train_vocoder() {
  "${train_cmd[@]}" "${hydra_conf[@]}" "+${voc_group}=${voc_base}" "data_dir=${feats}" "out_dir=${voc_dir}" \
    "seed=${seed_list[0]}" "device=${device}" "resume=${resume}" progress=false "${vocoder_args[@]}"
  touch "${voc_dir}/.done"
}

# record_rf RUN: the receptive field of a hand-designed run's decoder (RUN/rf.json, the report's RF column); the
# run's resolved config.yaml is rfspeech-rf's config, so the model is exactly the one trained
record_rf() {
  rfspeech-rf --config-dir "$(cd "$1" && pwd)" --config-name config +node=acoustic +submodule=decoder +units=frames \
    "out_dir=$1"
}

# gta_run_of RUN: the GTA folder of an acoustic run (exp/<name>/gta_<run>); seed_of RUN, arm_of RUN
gta_run_of() { echo "$(dirname "$1")/gta_$(basename "$1")"; }
seed_of() { echo "${1##*_seed}"; }
arm_of() { if [[ "$1" == */searched_seed* ]]; then echo searched; else echo hand-designed; fi; }

# vocoder_init: what the GTA fine-tune continues: a vocoder trained in stage 5 from its newest step checkpoint
# (generator and discriminator; best.pt holds the generator alone), a --vocoder_checkpoint as it is
vocoder_init() {
  local last=""
  [ -n "${vocoder_checkpoint}" ] || last=$(find "${voc_dir}/checkpoints" -maxdepth 1 -name 'ckpt_*.pt' 2>/dev/null | sort | tail -n 1)
  echo "${last:-${vocoder}}"
}

# gta_finetune RUN: RUN's teacher-forced mels of train + dev as a prepared corpus, checked against the vocoder,
# then the vocoder fine-tuned on them (init_from the stage 5 vocoder; the recordings are the targets)
gta_finetune() {
  local g rc=0
  g=$(gta_run_of "$1")
  rfspeech-gta "acoustic_checkpoint=$(ckpt_of "$1")" "data_dir=${feats}" "split=[train,dev]" "out_dir=${g}/data" \
    "device=${device}" progress=false
  # Parameters and value range against the vocoder and this corpus's ground-truth features: a parameter mismatch
  # also fails rfspeech-train below; a value-range finding is printed in the log and kept in check_mels.json.
  rfspeech-check-mels "vocoder=${vocoder}" "data_dir=${g}/data" "vocoder_data_dir=${feats}" \
    "json=${g}/data/check_mels.json" || rc=$?
  [ "${rc}" -le 1 ] || return "${rc}"
  "${train_cmd[@]}" "${hydra_conf[@]}" "+${gta_group}=${gta_base}" "data_dir=${g}/data" "out_dir=${g}/vocoder" \
    "init_from=$(vocoder_init)" "seed=$(seed_of "$1")" "device=${device}" "resume=${resume}" progress=false "${gta_args[@]}"
  touch "${g}/vocoder/.done"
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
  rfspeech-synthesize "acoustic_checkpoint=$(ckpt_of "$1")" "checkpoint=$(ckpt_of "${g}/vocoder")" \
    "input_dir=${feats}/eval" "out_dir=${g}/synth" "length_scale=${length_scale}" "device=${device}" progress=false \
    "${synth_args[@]}"
  rfspeech-evaluate "ref_dir=${feats}/eval" "syn_dir=${g}/synth" "out_dir=${g}/eval" "metrics=${eval_metrics}" \
    "feats_yaml=${feats}/feats.yaml" "jobs=${eval_jobs}" progress=false "${eval_args[@]}"
  rfspeech-synthesize "acoustic_checkpoint=$(ckpt_of "$1")" "input_dir=${feats}/eval" "duration_eval_dir=${g}/eval" \
    out_dir=null "device=${device}" progress=false
}

# ------------------------------------------------------------------------------------------ checks
check_options "$@"
[[ "${length_scale}" =~ ^[0-9]*\.?[0-9]+$ ]] || usage_error "--length_scale must be a positive number, got '${length_scale}'"
case "${checkpoint}" in best|last) ;; *) usage_error "--checkpoint must be best or last, got '${checkpoint}'" ;; esac
case "${gta}" in true|false) ;; *) usage_error "--gta must be true or false, got '${gta}'" ;; esac
case "${corpus}" in ljspeech|vctk) ;; *) usage_error "--corpus must be ljspeech or vctk (a corpus with transcripts), got '${corpus}'" ;; esac
derive_settings

# check_conf FILE WHAT: a recipe conf is a Hydra experiment file ("# @package _global_")
check_conf() {
  [ -f "$1" ] || usage_error "$2 $1 not found (see ls conf/)"
  [[ "$1" == *.yaml ]] || usage_error "$2 $1: must be a .yaml file"
  head -n 5 "$1" | grep -q '^# @package _global_' \
    || usage_error "$2 $1: not a recipe conf (its first line must be '# @package _global_')"
}
conf_dir_of() { cd "$(dirname "$1")" && pwd; }

if [ "${stop_stage}" -ge 2 ] && [ "${stage}" -le 7 ]; then
  [ -n "${conf}" ] || usage_error "--conf is empty: stages 2-7 need the acoustic-model recipe conf (e.g. conf/acoustic_tiny.yaml)"
fi
exp_name=""
hydra_conf=()
conf_root=""
if [ -n "${conf}" ]; then
  check_conf "${conf}" "conf"
  conf_group=$(basename "$(conf_dir_of "${conf}")")
  [[ "${conf_group}" =~ ^[A-Za-z0-9_]+$ ]] || usage_error "conf ${conf}: its directory name '${conf_group}' must be letters, digits or _"
  conf_base=$(basename "${conf}" .yaml)
  conf_root=$(dirname "$(conf_dir_of "${conf}")")
  hydra_conf=("hydra.searchpath=[file://${conf_root}]")
  exp_name=${conf_base}${tag:+_${tag}}
fi
voc_dir=${expdir}/${exp_name}/vocoder
if [ -n "${vocoder_checkpoint}" ]; then
  vocoder=${vocoder_checkpoint}
else
  vocoder=${voc_dir}/checkpoints/best.pt
  if run_stage 5; then
    [ -n "${vocoder_conf}" ] || die "stage 5 ($(stage_name 5)): give --vocoder_conf (a vocoder to train) or --vocoder_checkpoint"
    check_conf "${vocoder_conf}" "vocoder_conf"
    [ "$(dirname "$(conf_dir_of "${vocoder_conf}")")" = "${conf_root}" ] \
      || usage_error "--vocoder_conf ${vocoder_conf}: must live in a directory beside the conf's (${conf_root})"
    voc_group=$(basename "$(conf_dir_of "${vocoder_conf}")")
    voc_base=$(basename "${vocoder_conf}" .yaml)
  fi
fi

if [ "${gta}" = true ] && run_stage 8; then
  gta_conf=${gta_conf:-${vocoder_conf}}
  [ -n "${gta_conf}" ] || die "stage 8 ($(stage_name 8)): give --gta_conf (the vocoder conf of the GTA fine-tune) or --gta false"
  check_conf "${gta_conf}" "gta_conf"
  [ "$(dirname "$(conf_dir_of "${gta_conf}")")" = "${conf_root}" ] \
    || usage_error "--gta_conf ${gta_conf}: must live in a directory beside the conf's (${conf_root})"
  gta_group=$(basename "$(conf_dir_of "${gta_conf}")")
  gta_base=$(basename "${gta_conf}" .yaml)
fi

# Extra overrides: split on blanks into arrays (no globbing); values with blanks are not supported.
read -r -a prepare_args <<< "${prepare_opts}"
read -r -a train_args <<< "${train_opts}"
read -r -a search_args <<< "${search_opts}"
read -r -a vocoder_args <<< "${vocoder_opts}"
read -r -a gta_args <<< "${gta_opts}"
read -r -a synth_args <<< "${synth_opts}"
read -r -a eval_args <<< "${eval_opts}"
read -r -a compare_args <<< "${compare_opts}"

if [ "${n_gpus}" -gt 1 ]; then
  command -v torchrun > /dev/null || die "--n_gpus ${n_gpus} needs torchrun on PATH"
  train_tts_cmd=(torchrun --standalone "--nproc_per_node=${n_gpus}" "$(command -v rfspeech-train-tts)")
  train_cmd=(torchrun --standalone "--nproc_per_node=${n_gpus}" "$(command -v rfspeech-train)")
else
  train_tts_cmd=(rfspeech-train-tts)
  train_cmd=(rfspeech-train)
fi
need_tools rfspeech-prepare rfspeech-train-tts rfspeech-train rfspeech-rf rfspeech-synthesize rfspeech-evaluate \
  rfspeech-compare
if [ "${gta}" = true ] && run_stage 8; then need_tools rfspeech-gta rfspeech-check-mels; fi

# every trained acoustic model (hand-designed, then searched); synth_runs adds the vocoder's copy-synthesis
mapfile -t runs < <(runs_of "${exp_name}")
copysyn=${expdir}/${exp_name}/vocoder_copysyn
synth_runs=("${runs[@]}")
[ "${copy_synthesis}" = false ] || synth_runs+=("${copysyn}")
# the GTA counterpart of every acoustic run (stages 8-10) and the four-way report
gta_runs=()
for run in "${runs[@]}"; do gta_runs+=("$(gta_run_of "${run}")"); done
combinations=${expdir}/${exp_name}/combinations

log "$0 (stages ${stage}..${stop_stage}; experiment: ${exp_name:-none}; seeds: ${seed_list[*]}; nj ${nj})"
recipe_start=${SECONDS}

# ------------------------------------------------------------------------------------------ stages -1 to 1
# download, data preparation and features: the same in every recipe (utils/lib.sh)
data_stages

# ------------------------------------------------------------------------------------------ stage 2
if run_stage 2; then
  stage_start
  need "${feats}/feats.yaml" 1 2
  need "${feats}/train/utts.tsv" 1 2
  log "stage 2: training the hand-designed acoustic model (${#seed_list[@]} seed(s))"
  mkdir -p "${expdir}/${exp_name}"
  cp "${conf}" "${expdir}/${exp_name}/conf.yaml"
  for s in "${seed_list[@]}"; do
    run="${expdir}/${exp_name}/hand_seed${s}"
    write_info "${run}" hand-designed "${s}" "${exp_name}" tts
    run_job "${exp_name}/hand_seed${s}" "${run}/logs/train.log" train_tts "${run}" "${s}"
  done
  wait_runs 2
  for s in "${seed_list[@]}"; do
    run="${expdir}/${exp_name}/hand_seed${s}"
    run_job "${exp_name}/hand_seed${s}" "${run}/logs/rf.log" record_rf "${run}"
  done
  wait_runs 2
  stage_done 2
fi

# ------------------------------------------------------------------------------------------ stage 3
if run_stage 3 && [ "${search}" = true ]; then
  stage_start
  need "${feats}/feats.yaml" 1 3
  need "${feats}/train/utts.tsv" 1 3
  # A conf with steps.train / steps.search (tts.max_steps: ${steps.train}) gives the search run its own budget.
  search_budget=()
  if grep -qE '^steps:' "${conf}"; then
    # shellcheck disable=SC2016  # a Hydra interpolation, not a shell expansion
    search_budget=('steps.train=${steps.search}')
  fi
  log "stage 3: receptive-field search of the acoustic model's dilated convs (${#seed_list[@]} seed(s))"
  for s in "${seed_list[@]}"; do
    run="${expdir}/${exp_name}/search_seed${s}"
    run_job "${exp_name}/search_seed${s}" "${run}/logs/search.log" train_tts "${run}" "${s}" search.enabled=true \
      "${search_budget[@]}" "${search_args[@]}"
  done
  wait_runs 3
  for s in "${seed_list[@]}"; do
    need "${expdir}/${exp_name}/search_seed${s}/structure.yaml" 3 3
  done
  stage_done 3
fi

# ------------------------------------------------------------------------------------------ stage 4
if run_stage 4 && [ "${search}" = true ]; then
  stage_start
  need "${feats}/feats.yaml" 1 4
  for s in "${seed_list[@]}"; do need "${expdir}/${exp_name}/search_seed${s}/structure.yaml" 3 4; done
  log "stage 4: fine-tuning the searched structures with the hand-designed model's budget"
  for s in "${seed_list[@]}"; do
    run="${expdir}/${exp_name}/searched_seed${s}"
    structure="${expdir}/${exp_name}/search_seed${s}/structure.yaml"
    mkdir -p "${run}"
    cp "${structure}" "${run}/structure.yaml"
    write_info "${run}" searched "${s}" "${exp_name}" tts
    run_job "${exp_name}/searched_seed${s}" "${run}/logs/train.log" train_tts "${run}" "${s}" "structure=${structure}"
  done
  wait_runs 4
  stage_done 4
fi

# ------------------------------------------------------------------------------------------ stage 5
if run_stage 5; then
  stage_start
  need "${feats}/eval/utts.tsv" 1 5
  for run in "${runs[@]}"; do need "$(ckpt_of "${run}")" "$(trained_in "${run}")" 5; done
  if [ -n "${vocoder_checkpoint}" ]; then
    [ -f "${vocoder}" ] || die "stage 5 ($(stage_name 5)): --vocoder_checkpoint ${vocoder} not found"
    log "stage 5: vocoder ${vocoder} (given)"
  elif [ -f "${voc_dir}/.done" ] && [ -f "${vocoder}" ]; then
    log "stage 5: vocoder ${vocoder} (trained before; delete ${voc_dir} to retrain)"
  else
    log "stage 5: training the vocoder (${vocoder_conf}) -> ${voc_dir}"
    run_job "${exp_name}/vocoder" "${voc_dir}/logs/train.log" train_vocoder
    wait_runs 5
    need "${vocoder}" 5 5
  fi
  log "stage 5: synthesizing the eval sentences of ${feats}/eval from text"
  run_each synthesize.log synthesize_run "${runs[@]}"
  if [ "${copy_synthesis}" = true ]; then
    write_info "${copysyn}" "vocoder copy-synthesis" null "${exp_name}" tts
    run_job "${exp_name}/vocoder_copysyn" "${copysyn}/logs/synthesize.log" rfspeech-synthesize \
      "checkpoint=${vocoder}" "input_dir=${feats}/eval" "out_dir=${copysyn}/synth" "device=${device}" progress=false
  fi
  wait_runs 5
  stage_done 5
fi

# ------------------------------------------------------------------------------------------ stage 6
if run_stage 6; then
  stage_start
  need_each synth/speed.json 5 6 "${synth_runs[@]}"
  log "stage 6: evaluating against ${feats}/eval (metrics ${eval_metrics} + duration error)"
  run_each evaluate.log evaluate_run "${runs[@]}"
  if [ "${copy_synthesis}" = true ]; then
    run_job "${exp_name}/vocoder_copysyn" "${copysyn}/logs/evaluate.log" evaluate_run "${copysyn}" false
  fi
  wait_runs 6
  stage_done 6
fi

# ------------------------------------------------------------------------------------------ stage 7
if run_stage 7; then
  stage_start
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
  stage_done 7
  report=$(cd "${expdir}/${exp_name}" && pwd)
  log "results (mean ± 95% CI): MCD in dB (DTW) of the synthesized eval sentences against the recordings;"
  log "duration_mae_frames: frames per token against the MAS alignment of the reference mel; length_error:"
  log "relative utterance length error; mel_dtw_l1: predicted vs reference log-mel after DTW (no vocoder)"
  # The reports' first tables (metrics per arm), as rfspeech-compare writes them.
  awk '/^\|/ { on = 1; print; next } on { exit }' "${report}/report.md"
  if [ "${copy_synthesis}" = true ]; then
    log "the vocoder alone (copy-synthesis of the reference mels: the floor under the MCD above):"
    awk '/^\|/ { on = 1; print; next } on { exit }' "${copysyn}/report.md"
  fi
  log "synthesized eval sentences: ${expdir}/${exp_name}/<run>/synth/*.wav"
  log "report: ${report}/report.html (and report.md); vocoder: ${copysyn}/report.html"
fi

# ------------------------------------------------------------------------------------------ stage 8
if run_stage 8 && [ "${gta}" = true ]; then
  stage_start
  need "${feats}/dev/utts.tsv" 1 8
  for run in "${runs[@]}"; do need "$(ckpt_of "${run}")" "$(trained_in "${run}")" 8; done
  [ -f "${vocoder}" ] || die "stage 8 ($(stage_name 8)): vocoder ${vocoder} not found; run stage 5 ($(stage_name 5)) first"
  log "stage 8: GTA mels of train + dev through each acoustic model; ${vocoder} fine-tuned on them (${gta_conf})"
  run_each gta.log gta_finetune "${runs[@]}"
  wait_runs 8
  for run in "${runs[@]}"; do
    log "  $(gta_run_of "${run}")/data: $(grep -m 1 '^verdict:' "${run}/logs/gta.log" || echo 'verdict: n/a')"
  done
  stage_done 8
fi

# ------------------------------------------------------------------------------------------ stage 9
if run_stage 9 && [ "${gta}" = true ]; then
  stage_start
  need "${feats}/eval/utts.tsv" 1 9
  for run in "${gta_runs[@]}"; do need "${run}/vocoder/.done" 8 9; done
  log "stage 9: synthesizing and evaluating the eval sentences through each acoustic model and its GTA vocoder"
  run_each gta_evaluate.log gta_evaluate "${runs[@]}"
  wait_runs 9
  stage_done 9
fi

# ------------------------------------------------------------------------------------------ stage 10
if run_stage 10 && [ "${gta}" = true ]; then
  stage_start
  need_each eval/summary.json 6 10 "${runs[@]}"
  need_each eval/summary.json 9 10 "${gta_runs[@]}"
  log "stage 10: comparing the four combinations (vocoder on ground-truth vs GTA mels x hand-designed vs searched)"
  exps=$(IFS=,; echo "${runs[*]},${gta_runs[*]}")
  run_job "${exp_name}/combinations" "${combinations}/logs/compare.log" rfspeech-compare "exps=[${exps}]" \
    "out_dir=${combinations}" \
    "title='${exp_name} (${corpus}): vocoder on ground-truth mels vs GTA fine-tuned, hand-designed vs searched acoustic model'" \
    reference_arm=hand-designed "${compare_args[@]}"
  wait_runs 10
  stage_done 10
  log "results (mean ± 95% CI; arms without '+ GTA vocoder' use the vocoder of stage 5, trained on ground-truth mels):"
  awk '/^\|/ { on = 1; print; next } on { exit }' "${combinations}/report.md"
  log "GTA fine-tunes: ${expdir}/${exp_name}/gta_<run>/vocoder (their cost: vocoder/cost.json; not in the acoustic budget)"
  log "report: $(cd "${combinations}" && pwd)/report.html (and report.md)"
fi

log "finished stages ${stage}..${stop_stage} in $((SECONDS - recipe_start)) s"
