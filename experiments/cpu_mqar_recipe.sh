#!/usr/bin/env bash
# MQAR on the 2-core CPU with the recipe that learns (experiment=mqar as shipped: lr 1e-3, no weight decay,
# 100K examples, 2,000 steps): every attention type at 2,000 steps (mqar_recipe), then 6,000 steps
# (mqar_recipe_long) and two Hedgehog ablations at 6,000 steps (softmax-over-features activation, random init).
# Two runs at a time; every run stops training by DEADLINE (epoch seconds, default now + 80 min) and still writes
# its results.json; a run that would start within 10 minutes of the deadline is not started (listed as no-time
# in _jobs/summary.log). Taylor is last: on 2 cores it runs at about a tenth of the others' speed.
#
#   bash experiments/cpu_mqar_recipe.sh                        # -> /tmp/hedgehog_work/cpu_mqar_recipe
#   python experiments/collect.py /tmp/hedgehog_work/cpu_mqar_recipe   # tables mqar_recipe, ablations_mqar_recipe
#
# Ran on 2026-11-23 as experiments/results/runs/cpu_2026-11-23_mqar, from ad-hoc copies of these commands (its
# _jobs/summary.log: up to four runs at a time; Taylor and a feature_dim-8 ablation were left out for time).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${WORK_DIR:-/tmp/hedgehog_work/cpu_mqar_recipe}
export HEDGEHOG_JOB_DEADLINE=${DEADLINE:-$(( $(date +%s) + 4800 ))}
mkdir -p "$W/_jobs"
LONG="trainer.max_steps=6000 trainer.val_check_interval=500"
cat > "$W/jobs.txt" <<JOBS
mqar_recipe/softmax experiment=mqar_softmax
mqar_recipe/hedgehog experiment=mqar_hedgehog
mqar_recipe/t2r experiment=mqar_t2r
mqar_recipe/elu experiment=mqar_elu
mqar_recipe/performer experiment=mqar_performer
mqar_recipe/cosformer experiment=mqar_cosformer
mqar_recipe_long/hedgehog experiment=mqar_hedgehog $LONG
mqar_recipe_long/t2r experiment=mqar_t2r $LONG
mqar_recipe_long/performer experiment=mqar_performer $LONG
ablation_mqar_recipe/activation_softmax_6000 experiment=mqar_hedgehog attention.options.activation=softmax $LONG
ablation_mqar_recipe/init_random_6000 experiment=mqar_hedgehog attention.options.init=random $LONG
mqar_recipe_long/elu experiment=mqar_elu $LONG
mqar_recipe_long/cosformer experiment=mqar_cosformer $LONG
mqar_recipe/taylor experiment=mqar_taylor
JOBS
run_one() {
    local d=$1; shift
    if [ "$(date +%s)" -gt $(( HEDGEHOG_JOB_DEADLINE - 600 )) ]; then
        echo "$(date -u +%H:%M:%S) no-time $d" >> "$W/_jobs/summary.log"; return 0
    fi
    local start; start=$(date +%s)
    (cd "$REPO" && OMP_NUM_THREADS=1 python run.py "$@" task_name="${d%%/*}" hydra.run.dir="$W/$d" logger=csv \
        trainer.enable_progress_bar=false trainer.num_sanity_val_steps=0 seed=0 \
        +callbacks.deadline._target_=experiments.deadline_stop.DeadlineStop +callbacks.deadline.margin_s=60 \
        > "$W/_jobs/${d//\//_}.log" 2>&1)
    echo "$(date -u +%H:%M:%S) rc=$? $(( $(date +%s) - start ))s $d" >> "$W/_jobs/summary.log"
}
export -f run_one
export W REPO
xargs -P "${WORKERS:-2}" -L 1 bash -c 'run_one "$@"' _ < "$W/jobs.txt"
cat "$W/_jobs/summary.log"
