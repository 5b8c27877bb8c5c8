#!/usr/bin/env bash
# MQAR on the 2-core CPU with the recipe that learns (experiment=mqar as shipped: lr 1e-3, no weight decay,
# 100K examples, 2,000 steps): every attention type at 2,000 steps (mqar_recipe), then 6,000 steps
# (mqar_recipe_long) and two Hedgehog ablations at 6,000 steps (softmax-over-features activation, random init).
# The jobs go through experiments/batch_runner.py: two at a time, within BUDGET seconds (default 80 min); each
# run stops training by its deadline (experiments/deadline_stop.py) and still writes its results.json; a job with
# less than 10 minutes left is not started (no-time in _jobs/summary.log). Taylor is last: on 2 cores it runs at
# about a tenth of the others' speed.
#
#   bash experiments/cpu_mqar_recipe.sh                        # -> /tmp/hedgehog_work/cpu_mqar_recipe
#   python experiments/collect.py /tmp/hedgehog_work/cpu_mqar_recipe   # tables mqar_recipe, mqar_recipe_long, ablations_mqar_recipe
#
# Ran on 2026-11-23 as experiments/results/runs/cpu_2026-11-23_mqar, from ad-hoc copies of these commands (its
# _jobs/summary.log: up to four runs at a time; Taylor and a feature_dim-8 ablation were left out for time).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
W=${WORK_DIR:-/tmp/hedgehog_work/cpu_mqar_recipe}
BUDGET=${BUDGET:-4800}
PY=${PY:-python}
mkdir -p "$W/_jobs"
export OMP_NUM_THREADS=1
COMMON="logger=csv trainer.enable_progress_bar=false trainer.num_sanity_val_steps=0 seed=0 +callbacks.deadline._target_=experiments.deadline_stop.DeadlineStop +callbacks.deadline.margin_s=60"
LONG="trainer.max_steps=6000 trainer.val_check_interval=500"
PLAN=$W/_jobs/plan.txt
: > "$PLAN"
job() {   # job FOLDER OVERRIDES...: one plan line; the family (first folder) is the task name
    local d=$1; shift
    printf '%s | %s | - | %s run.py %s task_name=%s hydra.run.dir=%s %s\n' \
        "${d//\//_}" "$BUDGET" "$PY" "$*" "${d%%/*}" "$W/$d" "$COMMON" >> "$PLAN"
}
for att in softmax hedgehog t2r elu performer cosformer; do job mqar_recipe/$att experiment=mqar_$att; done
for att in hedgehog t2r performer; do job mqar_recipe_long/$att experiment=mqar_$att $LONG; done
job ablation_mqar_recipe/activation_softmax_6000 experiment=mqar_hedgehog attention.options.activation=softmax $LONG
job ablation_mqar_recipe/init_random_6000 experiment=mqar_hedgehog attention.options.init=random $LONG
for att in elu cosformer; do job mqar_recipe_long/$att experiment=mqar_$att $LONG; done
job mqar_recipe/taylor experiment=mqar_taylor
$PY experiments/batch_runner.py run "$PLAN" --log-dir "$W" --workers "${WORKERS:-2}" --budget "$BUDGET" --min-time 600
$PY experiments/batch_runner.py report --log-dir "$W"
