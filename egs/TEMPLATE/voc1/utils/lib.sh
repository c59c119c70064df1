# shellcheck shell=bash
# The scaffolding of the rfspeech recipe drivers (egs/TEMPLATE/voc1/voc.sh, egs/TEMPLATE/tts1/tts.sh): the options
# every driver has and their parsing, the stage table and its loop, done markers, logging and input checks, the
# job runner (the recipes' one execution path: see egs/TEMPLATE/voc1/README.md) and the data stages -1 to 1
# (download, data preparation, features), which are the same for every recipe. A driver is then its own options,
# its stage table and its stages:
#
#   # shellcheck source-path=SCRIPTDIR source=utils/lib.sh
#   . utils/lib.sh            # functions only: sourcing it defines no variable (so none becomes an option)
#   common_options            # the options every driver has (stage, stop_stage, conf, seeds, nj, ...)
#   foo=1                     # the driver's own options
#   usage() { ...; stage_usage; common_usage; ...; }   # --help (parse_options runs it)
#   add_data_stages                                              # stages -1 to 1, then the driver's own:
#   add_stage 2 train_stage "train" "exp/<name>/hand_seed<S>/"   # the stage table, in order; a fifth field
#   add_stage 3 search_stage "search" "exp/<name>/search_seed<S>/" search   # names an option that must be true
#   parse_options "$@"        # --name value / --name=value (utils/parse_options.sh)
#   recipe_init               # checks of the common options, derived settings (seed_list, device, feats, ...)
#   ...                       # the driver's checks and settings
#   run_stages                # every stage of the table within [stage, stop_stage], each timed
#
# Names that start with _ are lib.sh's own (parse_options refuses them as options).
# shellcheck disable=SC2154,SC2034  # the options and settings are the driver's: this file sets and reads them

# ------------------------------------------------------------------------------------------ logging, stages
log() { echo "$(date '+%F %T') $*"; }
die() { echo "error: $*" >&2; exit 1; }
# usage_error MESSAGE: a bad option value, exit status 2 (as parse_options.sh and the console scripts)
usage_error() { echo "error: $*" >&2; exit 2; }
is_int() { [[ "$1" =~ ^-?[0-9]+$ ]]; }

# ------------------------------------------------------------------------------------------ the stage table
# add_stage N FUNCTION NAME MAKES [OPTION]: stage N of the driver runs FUNCTION; NAME is its name in messages, MAKES
# what it writes (--help); with OPTION, the stage runs only when --OPTION is true. Stages run in table order.
add_stage() {
  declare -ga _stage_nums _stage_funcs _stage_options
  declare -gA _stage_names _stage_makes
  _stage_nums+=("$1")
  _stage_funcs+=("$2")
  _stage_names[$1]=$3
  _stage_makes[$1]=$4
  _stage_options+=("${5:-}")
}
# stage_name N: the stage's name in messages
stage_name() { echo "${_stage_names[$1]:-stage $1}"; }
# stage_usage: the stage table, for --help
stage_usage() {
  local i n
  echo "Stages (--stage N --stop_stage M runs those in between; each needs the outputs of the stages before it):"
  for i in "${!_stage_nums[@]}"; do
    n=${_stage_nums[$i]}
    printf '  %3s %-29s -> %s%s\n' "${n}" "${_stage_names[${n}]}" "${_stage_makes[${n}]}" \
      "${_stage_options[$i]:+ (when --${_stage_options[$i]} true)}"
  done
}

# run_stage N: true when stage N lies in [stage, stop_stage]
run_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
# stage_enabled N: true unless stage N has an option (the table's fifth field) that is not true
stage_enabled() {
  local i
  for i in "${!_stage_nums[@]}"; do
    if [ "${_stage_nums[$i]}" = "$1" ] && [ -n "${_stage_options[$i]}" ]; then
      [ "${!_stage_options[$i]}" = true ] || return 1
    fi
  done
  return 0
}

# run_stages: every stage of the table within [stage, stop_stage] whose option allows it, in table order, each
# timed (stage_start / stage_done)
run_stages() {
  local i n
  for i in "${!_stage_nums[@]}"; do
    n=${_stage_nums[$i]}
    if ! run_stage "${n}"; then continue; fi
    if ! stage_enabled "${n}"; then
      log "stage ${n} ($(stage_name "${n}")): skipped (--${_stage_options[$i]} false)"
      continue
    fi
    stage_start
    "${_stage_funcs[$i]}"
    stage_done "${n}"
  done
}

# CPU seconds (user + system) of every finished child of this shell: bash's times, which must run in this
# shell itself (a $(...) subshell would count its own, empty, children), so it goes through a file.
cpu_mark() { times > "${_cpu_tmp}"; }
cpu_read() {
  tail -n 1 "${_cpu_tmp}" | awk '{ t = 0; for (i = 1; i <= NF; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] } printf "%.0f", t }'
}
# stage_start; ...; stage_done N: log stage N's wall and CPU time
stage_start() { _t0=${SECONDS}; cpu_mark; _c0=$(cpu_read); }
stage_done() { cpu_mark; log "stage $1 ($(stage_name "$1")) done in $((SECONDS - _t0)) s wall, $(($(cpu_read) - _c0)) s cpu"; }

# Done markers: a run directory whose work is complete and reusable (a vocoder trained once for every acoustic
# run, say) is marked with DIR/.done: mark_done DIR after the work; is_done DIR before redoing it.
mark_done() { touch "$1/.done"; }
is_done() { [ -f "$1/.done" ]; }

# write_info RUN ARM SEED EXPERIMENT [TASK [COST_FROM]]: RUN/info.json, read by rfspeech-compare (SEED null: no
# seed; TASK may be empty). COST_FROM: a run directory, relative to RUN, whose cost.json counts in RUN's budget
# (the searched arm's search run: the report adds its steps and seconds to the fine-tune's).
write_info() {
  local tmp="$1/.info.json.tmp" name="$2" task="" cost_from=""
  [ "$3" = null ] || name="$2 seed $3"
  [ -z "${5:-}" ] || task=", \"task\": \"$5\""
  [ -z "${6:-}" ] || cost_from=", \"cost_from\": [\"$6\"]"
  mkdir -p "$1"
  printf '{"name": "%s", "arm": "%s", "seed": %s, "experiment": "%s", "corpus": "%s", "mel": "%s"%s%s}\n' \
    "${name}" "$2" "$3" "$4" "${corpus}" "${mel}" "${task}" "${cost_from}" > "${tmp}"
  mv "${tmp}" "$1/info.json"
}

# need FILE STAGE_THAT_MAKES_IT CURRENT_STAGE: one-line error when an input is missing
need() {
  [ -e "$1" ] || die "stage $3 ($(stage_name "$3")): $1 not found; run stage $2 ($(stage_name "$2")) first"
}
# need_each FILE STAGE_THAT_MAKES_IT CURRENT_STAGE RUN...: need RUN/FILE of every RUN
need_each() {
  local file=$1 made_by=$2 current=$3 run
  shift 3
  for run in "$@"; do need "${run}/${file}" "${made_by}" "${current}"; done
}

# need_tools TOOL...: one-line error when a console script is not on PATH
need_tools() {
  local tool
  for tool in "$@"; do
    command -v "${tool}" > /dev/null || die "${tool} not found on PATH: install rfspeech (pip install -e .) and activate its environment"
  done
}

# ------------------------------------------------------------------------------------------ options
# common_options: the options (and their defaults) every driver has; a recipe's run.sh passes its own defaults
common_options() {
  stage=-1              # first stage to run
  stop_stage=100        # last stage to run
  conf=""               # recipe conf(s) (Hydra experiment YAML, "# @package _global_")
  tag=""                # suffix of the experiment names: exp/<conf name>_<tag>
  resume=false          # continue interrupted runs from their newest checkpoint
  n_gpus=1              # 0: CPU; 1: one GPU (CPU when none); >1: torchrun DDP over n_gpus GPUs of this node
  db_root=""            # corpus root (empty: <download_dir>/<db_name>)
  seed=1                # seed of the single run per arm
  seeds=""              # several seeds per arm, e.g. "1 2 3" (overrides --seed)
  nj=1                  # runs at once (seeds, arms, experiments): CPU, multi-GPU nodes, or jobs queued by --cmd
  cmd=""                # wrapper of every job's console scripts, e.g. "srun -p cpu -c 4" (empty: run here)
  gpu_cmd=""            # wrapper of training, search and synthesis jobs (empty: --cmd), e.g. "srun --gres=gpu:1"
  threads=0             # torch threads per run (0: nproc / nj when nj > 1, else torch's default)
  corpus=ljspeech       # rfspeech-prepare corpus
  db_name=""            # directory name of the downloaded corpus (default: basename of db_root)
  download_url=""       # stage -1 archive (.tar.bz2, .tar.gz, .zip)
  download_dir=downloads
  mel=hifigan           # feature parameters: recipes/mel/<mel>.yaml (data/<mel>/)
  prepare_opts=""       # extra rfspeech-prepare overrides (stage 0; stage 1 keeps its mel.* and nj keys)
  train_opts=""         # extra overrides of the training runs
  search_opts=""        # extra overrides of the search runs
  synth_opts=""         # extra rfspeech-synthesize overrides
  eval_opts=""          # extra rfspeech-evaluate overrides
  compare_opts=""       # extra rfspeech-compare overrides
  search=true           # false: hand-designed arm only (the search and fine-tune stages skipped)
  checkpoint=best       # checkpoint synthesized: best (validation mel L1) | last
  datadir=data
  expdir=exp
}

# common_usage: the --help lines of the common options (the values shown are the defaults in force)
common_usage() {
  cat <<EOF
  --stage N           first stage of the table above [${stage}]
  --stop_stage N      last stage [${stop_stage}]
  --tag T             experiment name suffix: exp/<conf name>_T [${tag}]
  --resume B          continue interrupted runs (true|false) [${resume}]
  --n_gpus N          0 CPU, 1 one GPU, >1 torchrun DDP [${n_gpus}]
  --db_root DIR       corpus root [${db_root:-<download_dir>/<db_name>}]
  --seed S            seed of the single run per arm [${seed}]
  --seeds "S [S ...]" several seeds per arm (overrides --seed) [${seeds}]
  --nj N              runs (jobs) at once [${nj}]
  --cmd "W"           wrapper of every job's console scripts, e.g. "srun -p cpu -c 4" [${cmd}]
  --gpu_cmd "W"       wrapper of training/search/synthesis jobs (empty: --cmd), e.g. "srun --gres=gpu:4"
                      with --n_gpus 4 (torchrun in the job) [${gpu_cmd}]
  --threads N         torch threads per run, 0 automatic [${threads}]
  --corpus C          rfspeech-prepare corpus (recipes/corpus/C.yaml) [${corpus}]
  --mel M             recipes/mel/M.yaml [${mel}]
  --search B          run the searched arm (the search and fine-tune stages) [${search}]
  --checkpoint C      best | last [${checkpoint}]
  --prepare_opts "k=v ..." rfspeech-prepare overrides of stage 0 (stage 1: its mel.* and nj keys) [${prepare_opts}]
  --train_opts, --search_opts, --synth_opts, --eval_opts, --compare_opts "k=v ..."
                      extra overrides of the console scripts
  --download_url U, --download_dir D, --db_name N, --datadir D, --expdir D
EOF
}

# parse_options "$@": --name value / --name=value into the options (utils/parse_options.sh: an unknown option is
# an error, --help prints usage); stray arguments are kept in stray_args (recipe_init refuses them)
parse_options() {
  # shellcheck source-path=SCRIPTDIR source-path=SCRIPTDIR/.. source=utils/parse_options.sh
  . utils/parse_options.sh
  stray_args=("$@")
}

# recipe_init: checks of the common options, the derived settings (derive_settings), the overrides as arrays
# (prepare_args, train_args, search_args, synth_args, eval_args, compare_args) and the job runner's state
recipe_init() {
  _cpu_tmp=$(mktemp)
  trap 'rm -f "${_cpu_tmp}"' EXIT
  _run_pids=() _run_logs=() _run_names=() _slot_pids=() _visible_gpus=() job_wrapper=()
  _gpus_per_slot=0
  : "${run_cpu_times:=false}"
  check_options "${stray_args[@]+"${stray_args[@]}"}"
  case "${checkpoint}" in best|last) ;; *) usage_error "--checkpoint must be best or last, got '${checkpoint}'" ;; esac
  derive_settings
  # Extra overrides: split on blanks into arrays (no globbing); values with blanks are not supported.
  read -r -a prepare_args <<< "${prepare_opts}"
  read -r -a train_args <<< "${train_opts}"
  read -r -a search_args <<< "${search_opts}"
  read -r -a synth_args <<< "${synth_opts}"
  read -r -a eval_args <<< "${eval_opts}"
  read -r -a compare_args <<< "${compare_opts}"
  # With GPUs and --nj > 1, every local run slot gets its own --n_gpus GPUs (a --gpu_cmd/--cmd scheduler places
  # the jobs itself).
  if [ "${n_gpus}" -gt 0 ] && [ "${nj}" -gt 1 ] && [ -z "${gpu_cmd}${cmd}" ]; then slot_gpus "${n_gpus}"; fi
}

# console_cmd VAR TOOL: the array VAR runs the console script TOOL, through torchrun for --n_gpus > 1
console_cmd() {
  local -n _cmd_out=$1
  if [ "${n_gpus}" -gt 1 ]; then
    command -v torchrun > /dev/null || die "--n_gpus ${n_gpus} needs torchrun on PATH"
    _cmd_out=(torchrun --standalone "--nproc_per_node=${n_gpus}" "$(command -v "$2")")
  else
    _cmd_out=("$2")
  fi
}

# check_conf FILE WHAT: a recipe conf is a Hydra experiment file ("# @package _global_") in a directory named like
# a config group; conf_dir_of FILE: its directory (absolute)
check_conf() {
  [ -f "$1" ] || usage_error "$2 $1 not found (see ls conf/)"
  [[ "$1" == *.yaml ]] || usage_error "$2 $1: must be a .yaml file"
  head -n 5 "$1" | grep -q '^# @package _global_' \
    || usage_error "$2 $1: not a recipe conf (its first line must be '# @package _global_'; see egs/TEMPLATE/voc1/README.md)"
  [[ "$(basename "$(conf_dir_of "$1")")" =~ ^[A-Za-z0-9_]+$ ]] \
    || usage_error "$2 $1: its directory name '$(basename "$(conf_dir_of "$1")")' must be letters, digits or _"
}
conf_dir_of() { (cd "$(dirname "$1")" && pwd); }

# check_options ARGS...: the options every driver has (ARGS: what parse_options left over)
check_options() {
  [ $# -eq 0 ] || usage_error "unexpected argument(s): $* (options take the form --name value; see --help)"
  is_int "${stage}" || usage_error "--stage must be an integer, got '${stage}'"
  is_int "${stop_stage}" || usage_error "--stop_stage must be an integer, got '${stop_stage}'"
  [[ "${n_gpus}" =~ ^[0-9]+$ ]] || usage_error "--n_gpus must be an integer >= 0, got '${n_gpus}'"
  [[ "${nj}" =~ ^[1-9][0-9]*$ ]] || usage_error "--nj must be an integer >= 1, got '${nj}'"
  [[ "${threads}" =~ ^[0-9]+$ ]] || usage_error "--threads must be an integer >= 0, got '${threads}'"
  [[ "${tag}" =~ ^[A-Za-z0-9_.-]*$ ]] || usage_error "--tag may only hold letters, digits, '.', '_' and '-', got '${tag}'"
}

# derive_settings: seed_list (from --seeds, else --seed; checked), job_threads, device, eval_jobs, and the
# corpus and data paths db_name, db_root, prep, feats
derive_settings() {
  local s
  read -r -a seed_list <<< "${seeds:-${seed}}" || true
  [ "${#seed_list[@]}" -gt 0 ] || usage_error "--seeds is empty"
  for s in "${seed_list[@]}"; do is_int "${s}" || usage_error "seeds must be integers, got '${s}'"; done

  job_threads=${threads}
  if [ "${job_threads}" -eq 0 ] && [ "${nj}" -gt 1 ]; then
    job_threads=$(( $(nproc) / nj ))
    [ "${job_threads}" -ge 1 ] || job_threads=1
  fi
  # shellcheck disable=SC2034  # device is read by the driver only
  if [ "${n_gpus}" -eq 0 ]; then device=cpu; else device=auto; fi
  eval_jobs=${job_threads}
  [ "${eval_jobs}" -gt 0 ] || eval_jobs=$(nproc)

  : "${db_name:=$(basename "${db_root:-corpus}")}"
  : "${db_root:=${download_dir}/${db_name}}"
  prep=${datadir}/prep
  feats=${datadir}/${mel}
}

# ------------------------------------------------------------------------------------------ runs
# runs_of NAME...: every trained run of the experiments (per experiment: hand-designed, then each strategy's
# searched runs: searched_seed<S> for RF-Next, <strategy>_seed<S> for the others, e.g. dcls_seed<S>)
runs_of() {
  local name s st sts
  read -r -a sts <<< "${strategies:-rfnext}"
  for name in "$@"; do
    for s in "${seed_list[@]}"; do echo "${expdir}/${name}/hand_seed${s}"; done
    if [ "${search}" = true ]; then
      for st in "${sts[@]}"; do
        for s in "${seed_list[@]}"; do
          if [ "${st}" = rfnext ]; then echo "${expdir}/${name}/searched_seed${s}"; else echo "${expdir}/${name}/${st}_seed${s}"; fi
        done
      done
    fi
  done
}
# trained_in RUN: the stage that trains RUN (4 for a searched run, else 2)
trained_in() { if [[ "$(basename "$1")" == hand_seed* ]]; then echo 2; else echo 4; fi; }

# ckpt_of RUN: the checkpoint to synthesize (best.pt, or the newest step checkpoint)
ckpt_of() {
  local last
  if [ "${checkpoint}" = best ] && [ -f "$1/checkpoints/best.pt" ]; then
    echo "$1/checkpoints/best.pt"
    return
  fi
  last=$(find "$1/checkpoints" -maxdepth 1 -name 'ckpt_*.pt' 2>/dev/null | sort | tail -n 1)
  echo "${last:-$1/checkpoints/best.pt}"
}

# ------------------------------------------------------------------------------------------ jobs
# The one execution path of every stage: run_job starts a job (up to $nj at once), each logging to its own
# file; wait_runs reports every failure and stops the recipe. A job's console scripts run through the driver's
# --cmd wrapper (--gpu_cmd for jobs started with run_job --gpu: training, search, synthesis), Kaldi's
# run.pl/queue.pl/slurm.pl idea as a command prefix: empty runs them here; "srun --gres=gpu:1 --time=48:00:00"
# runs each on a Slurm node (a wrapper must run the command in the foreground, pass its output through and
# return its exit status). Multi-GPU jobs are torchrun inside the wrapper (the driver's --n_gpus).
# Two more settings: after slot_gpus N (recipe_init calls it for --nj > 1 with GPUs and no wrapper), local run
# slot k gets the GPUs k*N .. k*N+N-1 (positions in an existing CUDA_VISIBLE_DEVICES, else device numbers); a
# driver that sets run_cpu_times=true before recipe_init gets every run's log ending with the CPU time of the
# job's processes on this machine, reported when it is done. job_wrapper is the wrapper of the running job (set
# by run_job inside the job; none outside one).

# launch COMMAND [ARGS...]: COMMAND through the job's wrapper (a driver's job functions call console scripts so)
launch() { "${job_wrapper[@]}" "$@"; }

# slot_gpus N: give every run slot its own N GPUs
slot_gpus() {
  _gpus_per_slot=$1
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a _visible_gpus <<< "${CUDA_VISIBLE_DEVICES}"
    [ "${#_visible_gpus[@]}" -ge $((nj * $1)) ] \
      || die "--nj ${nj} x --n_gpus $1 needs $((nj * $1)) GPUs, CUDA_VISIBLE_DEVICES has ${#_visible_gpus[@]}"
  fi
}
gpus_of_slot() {
  local i out=()
  for ((i = $1 * _gpus_per_slot; i < ($1 + 1) * _gpus_per_slot; i++)); do
    if [ "${#_visible_gpus[@]}" -gt 0 ]; then out+=("${_visible_gpus[${i}]}"); else out+=("${i}"); fi
  done
  (IFS=,; echo "${out[*]}")
}
wait_for_slot() {  # sets slot to a free slot, waiting while all nj are busy
  local running
  while true; do
    running=" $(jobs -rp | tr '\n' ' ') "
    for ((slot = 0; slot < nj; slot++)); do
      if [ -z "${_slot_pids[${slot}]:-}" ] || [[ "${running}" != *" ${_slot_pids[${slot}]} "* ]]; then
        return 0
      fi
    done
    sleep 1
  done
}
# run_job [--gpu] NAME LOG COMMAND [ARGS...]: COMMAND as a job; a console script runs through the wrapper
# (--gpu: gpu_cmd, else cmd), a shell function calls its console scripts with launch
run_job() {
  local wrapper=${cmd:-} name logf gpus=""
  if [ "$1" = --gpu ]; then wrapper=${gpu_cmd:-${cmd:-}}; shift; fi
  name=$1 logf=$2
  shift 2
  mkdir -p "$(dirname "${logf}")"
  wait_for_slot
  if [ "${_gpus_per_slot}" -gt 0 ]; then gpus=$(gpus_of_slot "${slot}"); fi
  log "  ${name}: started${gpus:+ on GPU ${gpus}} (log ${logf})"
  (
    if [ "${job_threads}" -gt 0 ]; then
      export OMP_NUM_THREADS=${job_threads} MKL_NUM_THREADS=${job_threads}
    fi
    if [ -n "${gpus}" ]; then
      # shellcheck disable=SC2030  # meant for this run only
      export CUDA_VISIBLE_DEVICES=${gpus}
    fi
    read -r -a job_wrapper <<< "${wrapper}" || true
    start=${SECONDS}
    if declare -F "$1" > /dev/null; then "$@"; else launch "$@"; fi
    echo "# finished in $((SECONDS - start)) s wall"
    # with run_cpu_times, the last line is (bash's times) the CPU time of this shell and of everything it started
    if [ "${run_cpu_times}" = true ]; then times; fi
  ) > "${logf}" 2>&1 &
  _slot_pids[slot]=$!
  _run_pids+=("$!")
  _run_logs+=("${logf}")
  _run_names+=("${name}")
}
# run_each [--gpu] LOG FUNCTION RUN...: FUNCTION RUN as a job for every RUN, named <experiment>/<run>, logging to
# RUN/logs/LOG
run_each() {
  local gpu=() logname func run
  if [ "$1" = --gpu ]; then gpu=(--gpu); shift; fi
  logname=$1 func=$2
  shift 2
  for run in "$@"; do
    run_job "${gpu[@]}" "${run#"${expdir}/"}" "${run}/logs/${logname}" "${func}" "${run}"
  done
}
run_times() {  # run_times LOG: "W s wall" (with run_cpu_times: ", cpu user U system S") of a finished run's log
  local wall cpu
  wall=$(sed -n 's/^# finished in //p' "$1" | tail -n 1)
  if [ "${run_cpu_times}" = true ]; then
    cpu=$(tail -n 1 "$1")
    echo "${wall}, cpu user ${cpu% *} system ${cpu#* }"
  else
    echo "${wall}"
  fi
}
wait_runs() {  # wait_runs STAGE
  local i rc failed=0 why
  for i in "${!_run_pids[@]}"; do
    if wait "${_run_pids[$i]}"; then
      log "  ${_run_names[$i]}: done ($(run_times "${_run_logs[$i]}"))"
    else
      rc=$?
      failed=$((failed + 1))
      why=$(grep -m 1 '^error:' "${_run_logs[$i]}" || tail -n 1 "${_run_logs[$i]}")
      echo "error: stage $1 ($(stage_name "$1")): ${_run_names[$i]} failed (exit ${rc}): ${why#error: } [log: ${_run_logs[$i]}]" >&2
    fi
  done
  _run_pids=()
  _run_logs=()
  _run_names=()
  [ "${failed}" -eq 0 ] || exit 1
}

# ------------------------------------------------------------------------------------------ stages -1 to 1
# add_data_stages: stages -1 (download), 0 (data preparation) and 1 (features) in the stage table, the same in
# every recipe
add_data_stages() {
  add_stage -1 download_corpus "download" "the corpus in --db_root (skipped when it is there)"
  add_stage 0 prepare_data "data preparation" "data/prep/{train,dev,eval}/utts.tsv (+ wavs/): checks, audio, splits"
  add_stage 1 make_features "features" "data/<mel>/ (feats.yaml, */feats/*.npy; stats.npz when normalised)"
}

# download_corpus: stage -1, the corpus archive from download_url unpacked into db_root (unless it is there)
download_corpus() {
  local archive tmp top
  if [ -d "${db_root}" ] && [ -n "$(ls -A "${db_root}")" ]; then
    log "stage -1: ${db_root} exists, download skipped"
    return
  fi
  [ -n "${download_url}" ] || die "stage -1 (download): corpus directory ${db_root} not found (--db_root) and this recipe has no download; pass --db_root DIR"
  archive=${download_dir}/$(basename "${download_url}")
  mkdir -p "${download_dir}"
  if [ ! -f "${archive}" ]; then
    log "stage -1: downloading ${download_url}"
    if command -v wget > /dev/null; then
      wget -c -O "${archive}.part" "${download_url}"
    else
      curl -fL -C - -o "${archive}.part" "${download_url}"
    fi
    mv "${archive}.part" "${archive}"
  fi
  log "stage -1: extracting ${archive} into ${db_root}"
  tmp=${db_root}.extract
  rm -rf "${tmp}"
  mkdir -p "${tmp}"
  case "${archive}" in
    *.zip) unzip -q "${archive}" -d "${tmp}" ;;
    *.tar.bz2|*.tbz2|*.tar.gz|*.tgz|*.tar) tar -xf "${archive}" -C "${tmp}" ;;
    *) die "stage -1 (download): unknown archive type ${archive}" ;;
  esac
  # An archive with one top directory (LJSpeech-1.1/) becomes db_root; a flat one (VCTK 0.92) is db_root itself.
  mapfile -t top < <(ls -A "${tmp}")
  mkdir -p "$(dirname "${db_root}")"
  if [ "${#top[@]}" -eq 1 ] && [ -d "${tmp}/${top[0]}" ]; then
    mv "${tmp}/${top[0]}" "${db_root}"
    rmdir "${tmp}"
  else
    mv "${tmp}" "${db_root}"
  fi
}

# need_corpus STAGE: one-line error when db_root is missing
need_corpus() {
  [ -d "${db_root}" ] || die "stage $1 ($(stage_name "$1")): corpus directory ${db_root} not found (--db_root); run stage -1 (download) or pass --db_root DIR"
}
# prepare_data: stage 0, corpus scan, checks, audio conversion (the mel's rate; trim= etc. of --prepare_opts) and
# splits of db_root -> prep (manifests <split>/utts.tsv, converted audio in prep/wavs; no features)
prepare_data() {
  local split
  need_corpus 0
  log "stage 0: data preparation of ${db_root} (${corpus}) -> ${prep}"
  run_job prepare "${prep}.logs/prepare.log" rfspeech-prepare "corpus=${corpus}" "db_root=${db_root}" \
    "out_dir=${prep}" "mel=${mel}" features=false progress=false "${prepare_args[@]}"
  wait_runs 0
  for split in train dev eval; do
    log "  ${split}: $(($(wc -l < "${prep}/${split}/utts.tsv") - 1)) utterances"
  done
}

# make_features: stage 1, features (+ train statistics) of stage 0's splits and audio, kept as they are
# (rfspeech-prepare corpus=prepared db_root=prep) -> feats; of --prepare_opts only the mel.* and nj keys apply
make_features() {
  local opt feature_args=()
  need "${prep}/eval/utts.tsv" 0 1
  for opt in "${prepare_args[@]}"; do
    case "${opt}" in mel.*|+mel.*|nj=*) feature_args+=("${opt}") ;; esac
  done
  log "stage 1: features (mel=${mel}) of ${prep} -> ${feats}"
  run_job features "${feats}.logs/features.log" rfspeech-prepare corpus=prepared "db_root=${prep}" \
    "out_dir=${feats}" "mel=${mel}" features=true progress=false "${feature_args[@]}"
  wait_runs 1
  [ ! -f "${feats}/stats.npz" ] || log "  train statistics: ${feats}/stats.npz (features z-normalised)"
}
