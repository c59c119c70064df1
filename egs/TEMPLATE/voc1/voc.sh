#!/usr/bin/env bash
# rfspeech vocoder recipe driver: searched vs hand-designed vocoders on one corpus, same data and budget.
#
# Every egs/<dataset>/voc1/run.sh sets its dataset's defaults and calls this script (a symlink to
# egs/TEMPLATE/voc1/voc.sh), in the manner of ESPnet2's egs2/TEMPLATE/*/tts.sh. Run it from the recipe
# directory (run.sh changes into it): every relative path below is relative to that directory.
#
# The stages are the stage table below (--help prints it); the options, the stage loop, the job runner and the
# data stages -1 to 1 are utils/lib.sh's, shared with the text-to-speech driver (egs/TEMPLATE/tts1/tts.sh).
# Budgets: a recipe conf sets steps.train (stages 2 and 4) and steps.search (stage 3), with
# train.max_steps: ${steps.train}; this driver gives each run its own (train.max_steps=${steps.search} in
# stage 3), so a conf reads the same whichever console script loads it.
# Pretrained start: a conf with a top-level init_from (a trained hand-designed checkpoint, e.g. the mini
# recipe's egs/mini/pretrained/) compares fine-tuning instead of training from scratch: stage 2 continues
# the checkpoint for steps.train steps; stage 3 wraps the same checkpoint for the search
# (search.searchable.warm_start=true: its output is unchanged at step 0) for steps.search steps; stage 4
# fine-tunes the searched structure from the search run's weights for steps.finetune steps
# (steps.search + steps.finetune = steps.train: the same budget; the searched run's info.json names the search
# run, whose cost.json the report adds to the fine-tune's). --from_scratch true ignores init_from.
# Stages 2 and 4 also record the receptive field of each trained model (rfspeech-rf -> <run>/rf.json).
# --strategies "rfnext dcls" adds the learned-spacing arm (search.strategy=dcls; pip install 'rfspeech[dcls]'):
# exp/<name>/dcls_search_seed<S>/ in stage 3, exp/<name>/dcls_seed<S>/ in stage 4, arm "dcls" in the report; same
# start, seeds and budget as the RF-Next arm.
#
# Only the package's console scripts do the work (rfspeech-prepare, -train, -search, -rf, -synthesize,
# -evaluate, -compare); each run logs to <run>/logs/<stage>.log. One execution path (utils/lib.sh run_job):
# every run is a job, --nj at once, its console scripts started here or through --cmd / --gpu_cmd (e.g. srun
# on Slurm), with torchrun inside for --n_gpus > 1 (why not Hydra launchers: egs/TEMPLATE/voc1/README.md).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=utils/lib.sh
. utils/lib.sh

# ------------------------------------------------------------------------------------------ options
common_options        # utils/lib.sh: stage, stop_stage, conf, tag, seeds, nj, cmd, corpus, mel, search, ...
shared_search=false   # true: one search (first seed) fine-tuned with every seed; false: one search per seed
from_scratch=false    # true: train every run from scratch even where the conf sets init_from (pretrained)
strategies=rfnext     # search strategies, one searched arm each: rfnext (RF-Next) and/or dcls (learned tap positions)
# STRUCTURE_MODE (lead: switch once rfspeech-train continues from the search run's wrappers): how stage 4 builds
# the searched generator. single: the searched dilations as plain convs, weights from the search run's last
# checkpoint (pretrained start); multiple | merge keep the search model's branches (searched_start passes
# structure_from_search=true then: the key rfspeech-train must have for it).
structure_mode=single
global_backend=""     # where stage 3's global-search candidates train: local | ray (empty: the conf's, else local)
ray_address=""        # --global_backend ray: auto or HOST:PORT of a running Ray cluster (empty: ray.init() here)

# ------------------------------------------------------------------------------------------ stage table
add_data_stages       # -1 download, 0 data preparation, 1 features
add_stage 2 train_stage "train" "exp/<name>/hand_seed<S>/: the hand-designed baseline of every conf"
add_stage 3 search_stage "search" "exp/<name>/search_seed<S>/structure.yaml: global + local search (dcls: dcls_search_seed<S>/)" search
add_stage 4 finetune_stage "fine-tune" "exp/<name>/searched_seed<S>/: the searched structure, same budget (dcls: dcls_seed<S>/)" search
add_stage 5 synthesize_stage "synthesize" "exp/<name>/<run>/synth/*.wav, speed.json: the eval split"
add_stage 6 evaluate_stage "evaluate" "exp/<name>/<run>/eval/{metrics.csv,summary.json}: MCD, PESQ, STOI, ..."
add_stage 7 compare_stage "compare" "exp/<name>/report.html, report.md"

# usage: the help text, printed by parse_options on --help after the options before it are parsed, so the
# defaults shown are the calling recipe's (run.sh passes its own before the command line's)
usage() {
  cat <<EOF
Usage: ${RF_RECIPE:-$0} [options]
Vocoder recipe: data -> features -> hand-designed baseline -> receptive-field search -> fine-tune
-> synthesize -> evaluate -> report (exp/<name>/report.html). Paths are relative to the recipe directory.

EOF
  stage_usage
  cat <<EOF

Options (--name value or --name=value; defaults in brackets):
  --conf "F [F ...]"  recipe confs (Hydra experiment YAML, see egs/TEMPLATE/voc1/README.md) [${conf}]
  --shared_search B   one search shared by all seeds [${shared_search}]
  --from_scratch B    ignore the confs' init_from (pretrained start): train from scratch [${from_scratch}]
  --structure_mode M  stage 4's searched generator: single | multiple | merge (a DCLS arm's learned taps:
                      always single) [${structure_mode}]
  --strategies "S [S ...]" search strategies, one arm each: rfnext (arm "searched"), dcls (learned tap
                      positions, arm "dcls"; pip install 'rfspeech[dcls]') [${strategies}]
  --global_backend B  stage 3's global-search candidates: local (this job's processes) | ray (Ray tasks;
                      pip install -e ".[ray]"; needs --n_gpus <= 1) [${global_backend}]
  --ray_address A     with --global_backend ray: auto | HOST:PORT of a cluster started with ray start
                      (empty: ray.init() in the search job) [${ray_address}]
EOF
  common_usage
}

parse_options "$@"
run_cpu_times=true  # every run (lib.sh's run_job) also reports its CPU time
recipe_init

# ------------------------------------------------------------------------------------------ checks, settings
case "${structure_mode}" in single|multiple|merge) ;;
  *) usage_error "--structure_mode must be single, multiple or merge, got '${structure_mode}'" ;;
esac
read -r -a strategy_list <<< "${strategies}" || true
[ "${search}" = false ] || [ "${#strategy_list[@]}" -gt 0 ] || usage_error "--strategies is empty (rfnext and/or dcls)"
for st in "${strategy_list[@]}"; do
  case "${st}" in rfnext|dcls) ;; *) usage_error "--strategies: unknown strategy '${st}' (rfnext or dcls)" ;; esac
done
# --global_backend / --ray_address: search.global.* overrides of stage 3 (before --search_opts, which may override)
global_args=()
case "${global_backend}" in
  "") ;;
  local|ray) global_args+=("search.global.backend=${global_backend}") ;;
  *) usage_error "--global_backend must be local or ray, got '${global_backend}'" ;;
esac
[ -z "${ray_address}" ] || global_args+=("search.global.ray_address=${ray_address}")
if [ "${global_backend}" = ray ] && [ "${n_gpus}" -gt 1 ] && run_stage 3 && stage_enabled 3; then
  usage_error "--global_backend ray: stage 3 sends its candidates to Ray from one process, not a torchrun job (--n_gpus ${n_gpus});" \
    "use --n_gpus 1 (candidates get GPUs with --search_opts search.global.num_gpus=1)"
fi

# Recipe confs: Hydra experiment files ("# @package _global_"), composed into every rfspeech-train and
# rfspeech-search call as +<dir name>=<file name> with the conf's parent directory on the search path.
declare -A conf_group=() conf_name=() conf_file=()
names=()
read -r -a conf_list <<< "${conf}" || true
if [ "${stop_stage}" -ge 2 ] && [ "${stage}" -le 7 ]; then
  [ "${#conf_list[@]}" -gt 0 ] || usage_error "--conf is empty: stages 2-7 need at least one recipe conf (e.g. conf/hifigan_v1.yaml)"
fi
for c in "${conf_list[@]}"; do
  check_conf "${c}" conf
  cdir=$(conf_dir_of "${c}")
  base=$(basename "${c}" .yaml)
  name=${base}${tag:+_${tag}}
  [ -z "${conf_file[${name}]+x}" ] || usage_error "conf ${c}: experiment name ${name} given twice"
  names+=("${name}")
  conf_group[${name}]=$(basename "${cdir}")
  conf_name[${name}]=${base}
  conf_file[${name}]=${c}
  conf_root=$(dirname "${cdir}")
done
hydra_conf=()
if [ "${#names[@]}" -gt 0 ]; then
  for c in "${conf_list[@]}"; do
    [ "$(dirname "$(conf_dir_of "${c}")")" = "$(dirname "$(conf_dir_of "${conf_list[0]}")")" ] \
      || usage_error "--conf: every conf must live in the same directory (got ${conf_list[0]} and ${c})"
  done
  hydra_conf=("hydra.searchpath=[file://${conf_root}]")
fi

train_cmd=() search_cmd=()  # set by console_cmd
console_cmd train_cmd rfspeech-train
console_cmd search_cmd rfspeech-search
need_tools rfspeech-prepare rfspeech-train rfspeech-search rfspeech-rf rfspeech-synthesize rfspeech-evaluate \
  rfspeech-compare

search_seeds=("${seed_list[@]}")
[ "${shared_search}" = false ] || search_seeds=("${seed_list[0]}")
# search_dir_of NAME SEED [STRATEGY]: the search whose structure the seed fine-tunes (STRATEGY: rfnext by default)
search_dir_of() {
  local prefix=""
  [ "${3:-rfnext}" = rfnext ] || prefix="${3}_"
  if [ "${shared_search}" = true ]; then echo "${expdir}/$1/${prefix}search_seed${seed_list[0]}"
  else echo "${expdir}/$1/${prefix}search_seed$2"; fi
}
# searched_run_of NAME SEED STRATEGY: the fine-tuned run of a strategy (searched_seed<S> for RF-Next, dcls_seed<S>)
searched_run_of() { if [ "$3" = rfnext ]; then echo "${expdir}/$1/searched_seed$2"; else echo "${expdir}/$1/$3_seed$2"; fi; }
# arm_of STRATEGY: the report's arm name of a strategy's fine-tuned runs
arm_of() { if [ "$1" = rfnext ]; then echo searched; else echo "$1"; fi; }
# Budgets of the search run and of the searched fine-tune from pretrained weights (Hydra interpolations of the
# conf's steps.*, resolved by the console scripts)
# shellcheck disable=SC2016
search_budget='train.max_steps=${steps.search}' finetune_budget='train.max_steps=${steps.finetune}'
# Start of each arm: from the conf's init_from (pretrained) unless --from_scratch true.
declare -A pretrained=()
for name in "${names[@]}"; do
  init=$(sed -n 's/^init_from: *\([^ #]*\).*/\1/p' "${conf_file[${name}]}")
  if [ -n "${init}" ] && [ "${init}" != null ] && [ "${from_scratch}" = false ]; then
    pretrained[${name}]=${init}
    if run_stage 2 || run_stage 3; then
      [ -f "${init}" ] || die "conf ${conf_file[${name}]}: init_from ${init} not found (make it with the recipe's local/pretrain.sh, or pass --from_scratch true)"
    fi
  fi
done

# every trained run of every experiment
mapfile -t all_runs < <(runs_of "${names[@]}")

# ------------------------------------------------------------------------------------------ helpers
# start_of NAME: start_hand and start_search, the overrides of stages 2 and 3 that choose the start
start_of() {
  if [ -n "${pretrained[$1]:-}" ]; then
    start_hand=()
    start_search=(search.searchable.warm_start=true search.dcls.warm_start=true)
  else
    start_hand=(init_from=null)
    start_search=(init_from=null)
  fi
}
# searched_start NAME SEARCH_RUN [STRATEGY]: start_searched, the overrides of stage 4 (pretrained: the search run's
# last weights, trained for steps.finetune more steps; from scratch: steps.train steps), and searched_cost_from.
# A DCLS search's learned taps are plain convs: its structure is always applied in mode single.
searched_start() {
  local last mode=${structure_mode}
  [ "${3:-rfnext}" = rfnext ] || mode=single
  start_searched=(init_from=null "structure_mode=${mode}")
  # from scratch, the search run's cost is added by the report (info.json cost_from); continuing from the search
  # checkpoint, rfspeech-train already counts it in the fine-tune's cost.json (counted once, never twice)
  searched_cost_from="../$(basename "$2")"
  [ -n "${pretrained[$1]:-}" ] || return 0
  searched_cost_from=""
  last=$(find "$2/checkpoints" -maxdepth 1 -name 'ckpt_*.pt' 2> /dev/null | sort | tail -n 1)
  [ -n "${last}" ] || die "stage 4 ($(stage_name 4)): no step checkpoint in $2/checkpoints; run stage 3 ($(stage_name 3)) first"
  start_searched=("init_from=${last}" "${finetune_budget}" "structure_mode=${mode}")
  # STRUCTURE_MODE: multiple/merge continue the search run's branches (its alphas folded by merge); the key is
  # the pipeline's (lead: rename here if rfspeech-train spells it differently).
  [ "${mode}" = single ] || start_searched+=(structure_from_search=true)
}

# train_run NAME RUN SEED ARM COST_FROM [OVERRIDES...]: rfspeech-train, then its receptive field and info.json
# (COST_FROM: write_info's, may be empty)
train_run() {
  local name=$1 run=$2 s=$3 arm=$4 cost_from=$5
  shift 5
  launch "${train_cmd[@]}" "${hydra_conf[@]}" "+${conf_group[$name]}=${conf_name[$name]}" \
    data_dir="${feats}" out_dir="${run}" seed="${s}" device="${device}" resume="${resume}" progress=false \
    "$@" "${train_args[@]}"
  launch rfspeech-rf checkpoint="$(ckpt_of "${run}")" segment=null out_dir="${run}"
  write_info "${run}" "${arm}" "${s}" "${name}" "" "${cost_from}"
}

# synthesize_run RUN: the eval split through RUN's checkpoint
synthesize_run() {
  launch rfspeech-synthesize "checkpoint=$(ckpt_of "$1")" "input_dir=${feats}/eval" "out_dir=$1/synth" \
    "device=${device}" progress=false "${synth_args[@]}"
}
# evaluate_run RUN: RUN's synthesized eval split against the reference
evaluate_run() {
  launch rfspeech-evaluate "ref_dir=${feats}/eval" "syn_dir=$1/synth" "out_dir=$1/eval" \
    "feats_yaml=${feats}/feats.yaml" "jobs=${eval_jobs}" progress=false "${eval_args[@]}"
}

# ------------------------------------------------------------------------------------------ stages 2 to 7
train_stage() {
  local name s run
  need "${feats}/feats.yaml" 1 2
  need "${feats}/train/utts.tsv" 1 2
  log "stage 2: training the hand-designed baselines (${#names[@]} experiment(s) x ${#seed_list[@]} seed(s))"
  for name in "${names[@]}"; do
    start_of "${name}"
    mkdir -p "${expdir}/${name}"
    cp "${conf_file[${name}]}" "${expdir}/${name}/conf.yaml"
    for s in "${seed_list[@]}"; do
      run="${expdir}/${name}/hand_seed${s}"
      run_job --gpu "${name}/hand_seed${s}" "${run}/logs/train.log" train_run "${name}" "${run}" "${s}" \
        hand-designed "" "${start_hand[@]}"
    done
  done
  wait_runs 2
}

search_stage() {
  local name s st run
  need "${feats}/feats.yaml" 1 3
  need "${feats}/train/utts.tsv" 1 3
  log "stage 3: receptive-field search (${#names[@]} experiment(s) x ${#search_seeds[@]} seed(s) x" \
    "strategies ${strategy_list[*]})"
  for name in "${names[@]}"; do
    start_of "${name}"
    for st in "${strategy_list[@]}"; do
      for s in "${search_seeds[@]}"; do
        run=$(search_dir_of "${name}" "${s}" "${st}")
        run_job --gpu "${name}/$(basename "${run}")" "${run}/logs/search.log" "${search_cmd[@]}" "${hydra_conf[@]}" \
          "+${conf_group[${name}]}=${conf_name[${name}]}" "data_dir=${feats}" "out_dir=${run}" "seed=${s}" \
          "device=${device}" "resume=${resume}" progress=false "${search_budget}" "search.strategy=${st}" \
          "${start_search[@]}" "${global_args[@]}" "${search_args[@]}"
      done
    done
  done
  wait_runs 3
}

finetune_stage() {
  local name s st run search_run structure
  need "${feats}/feats.yaml" 1 4
  for name in "${names[@]}"; do
    for st in "${strategy_list[@]}"; do
      for s in "${seed_list[@]}"; do need "$(search_dir_of "${name}" "${s}" "${st}")/structure.yaml" 3 4; done
    done
  done
  log "stage 4: fine-tuning the searched structures with the baseline's budget"
  for name in "${names[@]}"; do
    for st in "${strategy_list[@]}"; do
      for s in "${seed_list[@]}"; do
        run=$(searched_run_of "${name}" "${s}" "${st}")
        search_run=$(search_dir_of "${name}" "${s}" "${st}")
        structure="${search_run}/structure.yaml"
        mkdir -p "${run}"
        cp "${structure}" "${run}/structure.yaml"
        # the search's log beside it: the report's "what the search saw" (rounds, branch weights, reach)
        if [ -f "${search_run}/search_log.json" ]; then
          cp "${search_run}/search_log.json" "${run}/search_log.json"
        fi
        searched_start "${name}" "${search_run}" "${st}"
        # the searched arm's budget: this run + its search run (see searched_start: counted once)
        run_job --gpu "${name}/$(basename "${run}")" "${run}/logs/train.log" train_run "${name}" "${run}" "${s}" \
          "$(arm_of "${st}")" "${searched_cost_from}" "structure=${structure}" "${start_searched[@]}"
      done
    done
  done
  wait_runs 4
}

synthesize_stage() {
  local run
  need "${feats}/eval/utts.tsv" 1 5
  for run in "${all_runs[@]}"; do
    need "${run}/checkpoints" "$(trained_in "${run}")" 5
    need "$(ckpt_of "${run}")" "$(trained_in "${run}")" 5
  done
  log "stage 5: synthesizing ${feats}/eval with every model"
  run_each --gpu synthesize.log synthesize_run "${all_runs[@]}"
  wait_runs 5
}

evaluate_stage() {
  need_each synth/speed.json 5 6 "${all_runs[@]}"
  log "stage 6: evaluating against ${feats}/eval"
  run_each evaluate.log evaluate_run "${all_runs[@]}"
  wait_runs 6
}

compare_stage() {
  local name runs exps
  need_each eval/summary.json 6 7 "${all_runs[@]}"
  log "stage 7: comparing searched and hand-designed models"
  for name in "${names[@]}"; do
    mapfile -t runs < <(runs_of "${name}")
    exps=$(IFS=,; echo "${runs[*]}")
    run_job "${name}/compare" "${expdir}/${name}/logs/compare.log" rfspeech-compare "exps=[${exps}]" \
      "out_dir=${expdir}/${name}" "title='${name} (${corpus}): searched vs hand-designed'" "${compare_args[@]}"
  done
  wait_runs 7
  for name in "${names[@]}"; do
    log "report: $(cd "${expdir}/${name}" && pwd)/report.html (and report.md)"
  done
}

# ------------------------------------------------------------------------------------------ run
log "$0 $* (stages ${stage}..${stop_stage}; experiments: ${names[*]:-none}; seeds: ${seed_list[*]}; nj ${nj})"
recipe_start=${SECONDS}
run_stages
cpu_mark
log "finished stages ${stage}..${stop_stage} in $((SECONDS - recipe_start)) s wall, $(cpu_read) s cpu"
