# shellcheck shell=bash
# Helpers shared by the rfspeech recipe drivers (egs/TEMPLATE/voc1/voc.sh, egs/TEMPLATE/tts1/tts.sh): logging,
# stage selection and input checks, the job runner (the recipes' one execution path: see
# egs/TEMPLATE/voc1/README.md), the option checks every driver has, and stages -1 to 1 (download, data
# preparation, features), which are the same for every recipe. Source it after
# utils/parse_options.sh (its own variables are then no options):
#
#   # shellcheck source-path=SCRIPTDIR source=utils/lib.sh
#   . utils/lib.sh
#
# The functions read the driver's options and settings (stage, stop_stage, tag, nj, threads, n_gpus, seed,
# seeds, search, checkpoint, corpus, mel, db_name, db_root, download_url, download_dir, datadir, expdir,
# prepare_args, and cmd / gpu_cmd where the driver has them) when they are called, so a driver may set those after sourcing this file; data_stages also
# is timed by stage_start and stage_done.
# shellcheck disable=SC2154  # the variables above are the driver's: this file alone never assigns them

# ------------------------------------------------------------------------------------------ logging, stages
log() { echo "$(date '+%F %T') $*"; }
die() { echo "error: $*" >&2; exit 1; }
is_int() { [[ "$1" =~ ^-?[0-9]+$ ]]; }

# stage_name N: the stage's name in messages; a driver renames a stage with stage_names[N]=...
declare -A stage_names=(
  [-1]="download" [0]="data preparation" [1]="features" [2]="train" [3]="search" [4]="fine-tune"
  [5]="synthesize" [6]="evaluate" [7]="compare"
)
stage_name() { echo "${stage_names[$1]:-stage $1}"; }

# run_stage N: true when stage N lies in [stage, stop_stage]
run_stage() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }

# CPU seconds (user + system) of every finished child of this shell: bash's times, which must run in this
# shell itself (a $(...) subshell would count its own, empty, children), so it goes through a file.
cpu_tmp=$(mktemp)
trap 'rm -f "${cpu_tmp}"' EXIT
cpu_mark() { times > "${cpu_tmp}"; }
cpu_read() {
  tail -n 1 "${cpu_tmp}" | awk '{ t = 0; for (i = 1; i <= NF; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] } printf "%.0f", t }'
}
# stage_start; ...; stage_done N: log stage N's wall and CPU time
stage_start() { t0=${SECONDS}; cpu_mark; c0=$(cpu_read); }
stage_done() { cpu_mark; log "stage $1 ($(stage_name "$1")) done in $((SECONDS - t0)) s wall, $(($(cpu_read) - c0)) s cpu"; }

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
# check_options "$@": the options every driver has (parse_options.sh leaves only stray arguments in "$@")
check_options() {
  [ $# -eq 0 ] || die "unexpected argument(s): $* (options take the form --name value; see --help)"
  is_int "${stage}" || die "--stage must be an integer, got '${stage}'"
  is_int "${stop_stage}" || die "--stop_stage must be an integer, got '${stop_stage}'"
  [[ "${n_gpus}" =~ ^[0-9]+$ ]] || die "--n_gpus must be an integer >= 0, got '${n_gpus}'"
  [[ "${nj}" =~ ^[1-9][0-9]*$ ]] || die "--nj must be an integer >= 1, got '${nj}'"
  [[ "${threads}" =~ ^[0-9]+$ ]] || die "--threads must be an integer >= 0, got '${threads}'"
  [[ "${tag}" =~ ^[A-Za-z0-9_.-]*$ ]] || die "--tag may only hold letters, digits, '.', '_' and '-', got '${tag}'"
}

# derive_settings: seed_list (from --seeds, else --seed; checked), job_threads, device, eval_jobs, and the
# corpus and data paths db_name, db_root, prep, feats
derive_settings() {
  local s
  read -r -a seed_list <<< "${seeds:-${seed}}" || true
  [ "${#seed_list[@]}" -gt 0 ] || die "--seeds is empty"
  for s in "${seed_list[@]}"; do is_int "${s}" || die "seeds must be integers, got '${s}'"; done

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
# Two more settings of the driver: after slot_gpus N, local run slot k gets the GPUs k*N .. k*N+N-1
# (positions in an existing CUDA_VISIBLE_DEVICES, else device numbers); with run_cpu_times=true every run's
# log ends with the CPU time of the job's processes on this machine, reported when it is done.
run_pids=()
run_logs=()
run_names=()
slot_pids=()
gpus_per_slot=0
visible_gpus=()
run_cpu_times=false
job_wrapper=()  # the wrapper of the running job (set by run_job inside the job; none outside one)

# launch COMMAND [ARGS...]: COMMAND through the job's wrapper (a driver's job functions call console scripts so)
launch() { "${job_wrapper[@]}" "$@"; }

# slot_gpus N: give every run slot its own N GPUs
slot_gpus() {
  gpus_per_slot=$1
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    IFS=, read -r -a visible_gpus <<< "${CUDA_VISIBLE_DEVICES}"
    [ "${#visible_gpus[@]}" -ge $((nj * $1)) ] \
      || die "--nj ${nj} x --n_gpus $1 needs $((nj * $1)) GPUs, CUDA_VISIBLE_DEVICES has ${#visible_gpus[@]}"
  fi
}
gpus_of_slot() {
  local i out=()
  for ((i = $1 * gpus_per_slot; i < ($1 + 1) * gpus_per_slot; i++)); do
    if [ "${#visible_gpus[@]}" -gt 0 ]; then out+=("${visible_gpus[${i}]}"); else out+=("${i}"); fi
  done
  (IFS=,; echo "${out[*]}")
}
wait_for_slot() {  # sets slot to a free slot, waiting while all nj are busy
  local running
  while true; do
    running=" $(jobs -rp | tr '\n' ' ') "
    for ((slot = 0; slot < nj; slot++)); do
      if [ -z "${slot_pids[${slot}]:-}" ] || [[ "${running}" != *" ${slot_pids[${slot}]} "* ]]; then
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
  if [ "${gpus_per_slot}" -gt 0 ]; then gpus=$(gpus_of_slot "${slot}"); fi
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
  slot_pids[slot]=$!
  run_pids+=("$!")
  run_logs+=("${logf}")
  run_names+=("${name}")
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
  for i in "${!run_pids[@]}"; do
    if wait "${run_pids[$i]}"; then
      log "  ${run_names[$i]}: done ($(run_times "${run_logs[$i]}"))"
    else
      rc=$?
      failed=$((failed + 1))
      why=$(grep -m 1 '^error:' "${run_logs[$i]}" || tail -n 1 "${run_logs[$i]}")
      echo "error: stage $1 ($(stage_name "$1")): ${run_names[$i]} failed (exit ${rc}): ${why#error: } [log: ${run_logs[$i]}]" >&2
    fi
  done
  run_pids=()
  run_logs=()
  run_names=()
  [ "${failed}" -eq 0 ] || exit 1
}

# ------------------------------------------------------------------------------------------ stages -1 to 1
# data_stages: stages -1 (download), 0 (data preparation) and 1 (features) where they lie in [stage, stop_stage],
# each timed by the driver's stage_start and stage_done
data_stages() {
  if run_stage -1; then stage_start; download_corpus; stage_done -1; fi
  if run_stage 0; then stage_start; prepare_data; stage_done 0; fi
  if run_stage 1; then stage_start; make_features; stage_done 1; fi
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
