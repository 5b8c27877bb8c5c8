# Shared by the batch scripts (experiments/gpu_batch_*.sh, cpu_batch.sh; sourced, not run): environment, the
# job-plan helper and the helpers for jobs several batches plan, pre-flight checks, running the plan through
# experiments/batch_runner.py, and packing. Expects BATCH to be set by the caller, and TOTAL (seconds for the whole
# script) before run_plan: set it, or give `preflight SMOKE_S GPU_S` (or `budget SMOKE_S GPU_S`) the two budgets.
#
# Environment (all optional here; on the GPU host OUT, HEDGEHOG_DATA_DIR, MINILM_DIR, SMOLLM2_GGUF are set):
#   SMOKE=1            tiny CPU version of the batch (1-2 attention types per experiment, a few steps)
#   OUT                where the tarballs and the summary go (default /tmp/hedgehog_out/$BATCH)
#   WORK_DIR           scratch folder for runs, teachers and logs (default /tmp/hedgehog_work/$BATCH)
#   WORKERS            parallel runs (default 8 on a GPU, 2 in SMOKE mode)
#   SEED               seed of every run (default 0)
#   PYTHON             interpreter (default python)
#   PAUSE_MARGIN       seconds before a job's deadline at which its run pauses, to continue in the next sitting
#   PACK_PAUSED=1      also pack the checkpoints of paused runs (to continue them on another machine)
# A caller may set LOGS before sourcing (the folder of the runs; default $WORK/$BATCH), and JOB_HISTORY before run_plan
# (a JSONL file of every job that ended, kept over invocations: batch_runner.py --history).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
T0=${T0:-$(date +%s)}
SMOKE=${SMOKE:-0}
SEED=${SEED:-0}
PY=${PYTHON:-$(command -v python || command -v python3)}
OUT=${OUT:-/tmp/hedgehog_out/$BATCH}
WORK=${WORK_DIR:-/tmp/hedgehog_work/$BATCH}
LOGS=${LOGS:-$WORK/$BATCH}
JOBS=$LOGS/_jobs
PLAN=$WORK/plan.txt
mkdir -p "$OUT" "$WORK" "$JOBS"
: > "$PLAN"

export HEDGEHOG_LOG_DIR=$LOGS
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$REPO/src"
export WANDB_MODE=offline WANDB_SILENT=true WANDB_DISABLE_GIT=true HYDRA_FULL_ERROR=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} PYTHONUNBUFFERED=1
DATA_DIR=${HEDGEHOG_DATA_DIR:-$REPO/../shared/data}
export HEDGEHOG_DATA_DIR=$DATA_DIR

if [ "$SMOKE" = 1 ]; then
    TRAINER=cpu
    WORKERS=${WORKERS:-2}
else
    TRAINER=gpu
    WORKERS=${WORKERS:-8}
fi
# Every run: the chosen trainer (gpu = one CUDA device, bf16-mixed), CSV + offline W&B, no progress bars.
LOGGER=${LOGGER:-many}   # csv where wandb is not installed
# COMMON_NOSEED: the same without the seed, for jobs that give their own.
COMMON_NOSEED="trainer=$TRAINER logger=$LOGGER trainer.enable_progress_bar=false trainer.num_sanity_val_steps=0 trainer.log_every_n_steps=20"
COMMON="$COMMON_NOSEED seed=$SEED"

elapsed() { echo $(( $(date +%s) - T0 )); }
# budget SMOKE_S GPU_S: TOTAL, the seconds the whole batch may take: TOTAL_BUDGET_S if set, else SMOKE_S with SMOKE=1
# and GPU_S on the GPU
budget() { if [ "$SMOKE" = 1 ]; then TOTAL=${TOTAL_BUDGET_S:-$1}; else TOTAL=${TOTAL_BUDGET_S:-$2}; fi; }
say() { echo "[$BATCH $(elapsed)s] $*" | tee -a "$JOBS/batch.log"; }

# job NAME TIMEOUT_S AFTER COMMAND...  -- one line of the plan (AFTER: comma-separated job names or -)
job() {
    local name=$1 timeout=$2 after=$3
    shift 3
    printf '%s | %s | %s | %s\n' "$name" "$timeout" "$after" "$*" >> "$PLAN"
}

# mqar_ablation_jobs SEEDS TIMEOUT_S OVERRIDES...: plan lines for the four MQAR ablations of Hedgehog (feature_dim 16
# and 64, softmax over features, random init) at each seed -> $LOGS/ablation_mqar_seeds/<setting>_s<seed>; their
# reference is mqar_seeds/hedgehog_s<seed> with the same OVERRIDES
mqar_ablation_jobs() {
    local seeds=$1 timeout=$2 seed setting name
    shift 2
    for seed in $seeds; do
        for setting in feature_dim=16 feature_dim=64 activation=softmax init=random; do
            name=${setting/=/_}
            job abl_mqar_${name}_s$seed "$timeout" - "$PY run.py experiment=mqar_hedgehog task_name=ablation_mqar_seeds hydra.run.dir=$LOGS/ablation_mqar_seeds/${name}_s$seed $COMMON_NOSEED seed=$seed $* attention.options.$setting"
        done
    done
}

# safe MARGIN_S: Hydra overrides adding the deadline callback (stop training MARGIN_S before the job's deadline)
safe() { echo "+callbacks.deadline._target_=experiments.deadline_stop.DeadlineStop +callbacks.deadline.margin_s=$1"; }

# keep_ckpt DIR: a run folder whose checkpoints the runner must not delete (removed again by the job itself)
keep_ckpt() { echo "mkdir -p $1 && touch $1/.keep_checkpoints"; }

# minilm_glue_recipe: the finetuned-conversion recipe of all-MiniLM-L6-v2 on GLUE (batches A, B, D). Sets MINILM (the
# model folder: MINILM_DIR), TEACH (where teachers are exported), GLUE_SET (run overrides), GLUE_FT (teacher
# finetuning steps), GLUE_DS and GLUE_FL (each linear arm's distillation and finetuning steps). Full: batch 64, the
# teacher 400 steps, each arm 100 + 300 steps; SMOKE=1: 64 training examples, a few steps.
minilm_glue_recipe() {
    MINILM=${MINILM_DIR:-minilm}
    TEACH=$WORK/teachers
    if [ "$SMOKE" = 1 ]; then
        GLUE_SET="model.name_or_path=$MINILM model.dtype=float32 data.max_train_samples=64 data.max_eval_samples=48 data.batch_size=8 data.eval_batch_size=16 trainer.val_check_interval=2 trainer.limit_val_batches=1"
        GLUE_FT=3; GLUE_DS=2; GLUE_FL=2
    else
        GLUE_SET="model.name_or_path=$MINILM model.dtype=float32 data.batch_size=64 regime.finetune_lr=8e-5 regime.finetune_linear_lr=8e-5 trainer.val_check_interval=100 trainer.limit_val_batches=8 callbacks.model_checkpoint.every_n_train_steps=1000"
        GLUE_FT=400; GLUE_DS=100; GLUE_FL=300
    fi
}

# glue_teacher_job TASK TASK_NAME DIR: plan the softmax teacher of TASK (minilm_glue_recipe, timeout T_TEACH, stages
# stopped by SAFE), finetuned in DIR (its run is also the softmax arm) and exported to $TEACH/TASK
glue_teacher_job() {
    local task=$1 family=$2 dir=$3
    job teacher_$task $T_TEACH - "$(keep_ckpt "$dir") && { $PY run.py experiment=glue_minilm_softmax data=glue/$task task_name=$family hydra.run.dir=$dir $COMMON $GLUE_SET $SAFE regime.finetune_steps=$GLUE_FT; $PY experiments/export_teacher.py $dir $TEACH/$task --model-path $MINILM; } && rm -f $dir/.keep_checkpoints"
}

# glue_arm_job TASK ATTENTION: plan one linear attention on TASK from that task's teacher (after teacher_TASK,
# timeout T_GLUE): distil, then finetune                                       -> $LOGS/glue/<task>_<attention>
glue_arm_job() {
    local task=$1 att=$2
    job glue_${task}_$att $T_GLUE teacher_$task "$PY run.py experiment=glue_minilm_$att data=glue/$task task_name=glue hydra.run.dir=$LOGS/glue/${task}_$att $COMMON $GLUE_SET $SAFE regime.teacher_checkpoint=$TEACH/$task regime.distill_steps=$GLUE_DS regime.finetune_linear_steps=$GLUE_FL"
}

# minilm_analysis_job TIMEOUT_S: plan the attention analysis of all-MiniLM-L6-v2 (experiments/analysis_attention.py,
# a longer distillation than the committed CPU run; SMOKE=1: a few steps)       -> $LOGS/analysis
minilm_analysis_job() {
    local args="--num-train 4096 --num-eval 256 --seq-len 128 --batch-size 32 --distill-steps 600"
    [ "$SMOKE" = 1 ] && args="--num-train 32 --num-eval 8 --seq-len 64 --batch-size 8 --distill-steps 2 --maps elu,hedgehog,t2r"
    job analysis_minilm_gpu $1 - "$PY experiments/analysis_attention.py --model minilm --model-path $MINILM --data-dir $DATA_DIR --out $LOGS/analysis --figures $LOGS/analysis/figures --tag minilm_gpu $args"
}

# efficiency_alone TIMEOUT_S ARGS...: experiments/efficiency.py ARGS, alone on the device before the plan runs, its
# output in _jobs/efficiency.log; SKIP_EFFICIENCY=1 leaves it out
efficiency_alone() {
    [ -n "${SKIP_EFFICIENCY:-}" ] && return 0
    local limit=$1
    shift
    say "efficiency (alone on the device, timeout ${limit}s)"
    timeout -k 10 "$limit" $PY experiments/efficiency.py "$@" > "$JOBS/efficiency.log" 2>&1
    say "efficiency exit $? ($(tail -n 1 "$JOBS/efficiency.log"))"
}

# preflight [SMOKE_S GPU_S]: with the two numbers, TOTAL first (budget); then the checks of the environment, the
# packages, the device and the data, and the packer that writes a tarball every 2 minutes. Fails (status 1) with a
# FATAL line when something the batch needs is missing.
preflight() {
    [ $# = 2 ] && budget "$1" "$2"
    say "repo $REPO, git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), SMOKE=$SMOKE, workers $WORKERS, budget ${TOTAL}s"
    say "data $DATA_DIR, out $OUT, work $WORK"
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "host: $(hostname)"
        echo "git: $(git rev-parse HEAD 2>/dev/null) $(git status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified files"
        nproc 2>/dev/null | sed 's/^/cpus: /'
        command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'
        $PY - <<'EOF'
import importlib, sys
print("python:", sys.version.split()[0])
for name in ("torch", "lightning", "transformers", "peft", "hydra", "omegaconf", "wandb", "rouge_score", "gguf", "triton"):
    try:
        mod = importlib.import_module(name)
        print(f"{name}: {getattr(mod, '__version__', '?')}")
    except Exception as error:
        print(f"{name}: MISSING ({type(error).__name__}: {error})")
import torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
    } > "$JOBS/env.txt" 2>&1
    cat "$JOBS/env.txt" | sed "s/^/[$BATCH env] /"
    local missing
    required="torch|lightning|transformers|hydra|omegaconf"
    [ "$LOGGER" = csv ] || required="$required|wandb"
    missing=$(grep -E "^($required): MISSING" "$JOBS/env.txt")
    if [ -n "$missing" ]; then
        say "FATAL: required packages missing: $missing (export PYTHONPATH=/tmp/site:src after installing the wheels)"
        return 1
    fi
    if [ "$SMOKE" != 1 ] && ! grep -q "^cuda: True" "$JOBS/env.txt"; then
        say "FATAL: no CUDA device; run with SMOKE=1 for the CPU check"
        return 1
    fi
    if [ ! -d "$DATA_DIR/glue" ] || [ ! -d "$DATA_DIR/wikitext" ]; then
        say "FATAL: data not found under $DATA_DIR (set HEDGEHOG_DATA_DIR)"
        return 1
    fi
    if command -v nvidia-smi >/dev/null && [ "$SMOKE" != 1 ]; then
        nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$JOBS/gpu_util.csv" 2>/dev/null &
        GPU_MON=$!
    fi
    # The attention kernels must agree with the PyTorch reference on this device; if not, run on the reference.
    if [ "$SMOKE" != 1 ] && [ -z "${HEDGEHOG_ATTENTION_BACKEND:-}" ]; then
        if timeout 120 $PY experiments/preflight_kernels.py > "$JOBS/preflight_kernels.log" 2>&1; then
            say "attention kernels agree with the reference: backend auto"
        else
            export HEDGEHOG_ATTENTION_BACKEND=torch
            say "attention kernels failed the preflight (see _jobs/preflight_kernels.log): HEDGEHOG_ATTENTION_BACKEND=torch"
        fi
    fi
    say "attention backend: ${HEDGEHOG_ATTENTION_BACKEND:-auto}"
    # A tarball every 2 minutes, so that results come back even if the call is cut short before the end.
    rm -f "$WORK/.stop_packer"
    ( n=0
      while [ ! -e "$WORK/.stop_packer" ]; do
          sleep 5; n=$((n + 1))
          if [ $((n % 24)) = 0 ] && [ ! -e "$WORK/.stop_packer" ]; then
              $PY experiments/batch_runner.py pack --log-dir "$LOGS" --out "$OUT/$BATCH.tar.gz" --arcname "$BATCH" \
                  ${PACK_PAUSED:+--paused-checkpoints --max-mib 60} > /dev/null 2>&1
          fi
      done ) &
    PACKER=$!
    return 0
}

# run_plan [RESERVE_S]: run the plan with what is left of the budget minus RESERVE_S (packing time). With PAUSE_MARGIN
# set, a run that cannot finish pauses PAUSE_MARGIN seconds before its job's deadline (checkpoint, exit 3) and the
# same batch run again continues it.
run_plan() {
    local reserve=${1:-30}
    local left=$(( TOTAL - $(elapsed) - reserve ))
    say "plan: $(grep -c . "$PLAN") jobs, runner budget ${left}s"
    cp "$PLAN" "$JOBS/plan.txt"
    $PY experiments/batch_runner.py run "$PLAN" --log-dir "$LOGS" --workers "$WORKERS" --budget "$left" \
        --min-time "${MIN_TIME:-40}" ${ONLY:+--only "$ONLY"} ${JOB_HISTORY:+--history "$JOB_HISTORY"} \
        ${PAUSE_MARGIN:+--pause-margin "$PAUSE_MARGIN"} 2>&1 | tee -a "$JOBS/batch.log"
}

finish() {
    [ -n "${GPU_MON:-}" ] && kill "$GPU_MON" 2>/dev/null
    if [ -n "${PACKER:-}" ]; then touch "$WORK/.stop_packer"; wait "$PACKER" 2>/dev/null; fi
    $PY experiments/batch_runner.py report --log-dir "$LOGS" > "$JOBS/results_table.txt" 2>&1
    cat "$JOBS/results_table.txt"
    $PY experiments/batch_runner.py estimate --log-dir "$LOGS" --workers "$WORKERS" --sitting "$TOTAL" --plan "$PLAN" \
        > "$JOBS/estimate.txt" 2>&1 && tail -n 1 "$JOBS/estimate.txt" | sed "s/^/[$BATCH] /"
    say "packing"
    $PY experiments/batch_runner.py pack --log-dir "$LOGS" --out "$OUT/$BATCH.tar.gz" --arcname "$BATCH" \
        ${PACK_PAUSED:+--paused-checkpoints --max-mib 60}
    { cat "$JOBS/summary.log" 2>/dev/null; echo; cat "$JOBS/results_table.txt"; echo; tail -n 5 "$JOBS/batch.log"; } \
        > "$OUT/${BATCH}_summary.log"
    say "done: $(ls -la "$OUT" | tail -n +2 | awk '{print $5, $9}' | tr '\n' ' ')"
}
