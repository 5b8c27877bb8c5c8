#!/usr/bin/env bash
# Batch I: finetuned conversion on GLUE against converged teachers, three seeds, equal budgets.
#   per task and seed: the softmax teacher finetuned to its plateau on a held-out slice of the training set
#   (experiment=glue_minilm_teacher: at most 5,000 steps), which then trains on for the linear arms' budget as the
#   softmax control, and is exported (the end of its finetune stage)  -> $LOGS/glue_seeds/<task>_softmax_s<seed>
#   then every arm of $ARMS from that teacher: distil $GLUE_DS steps, finetune $GLUE_FL steps
#                                                                      -> $LOGS/glue_seeds/<task>_<arm>_s<seed>
# Every run ends at its step count (the teacher at its plateau): one that cannot finish pauses $PAUSE_MARGIN s
# before the sitting ends and continues when the batch is run again; the exported teachers live in
# $WORK/teachers, so later sittings must run on the same machine (or export again: the teacher runs keep their
# checkpoints until their arms are done).
#
#   OUT=/out MINILM_DIR=/models/minilm bash experiments/gpu_batch_i.sh     # on the GPU host, one sitting
#   SMOKE=1 bash experiments/gpu_batch_i.sh                                # CPU check, tiny
set -uo pipefail
BATCH=batch_i
PAUSE_MARGIN=${PAUSE_MARGIN:-60}
source "$(dirname "${BASH_SOURCE[0]}")/batch_common.sh"
preflight 1500 540 || { finish; exit 1; }
minilm_glue_recipe   # MINILM, TEACH, GLUE_SET, GLUE_DS, GLUE_FL

if [ "$SMOKE" = 1 ]; then
    TASKS=${GLUE_TASKS:-"rte"}; SEEDS=${SEEDS:-"0"}; ARMS=${ARMS:-"hedgehog"}
    TEACHER_SET="regime.finetune_steps=6 callbacks.plateau_stop.patience=1"
    T_RUN=600
else
    TASKS=${GLUE_TASKS:-"cola sst2 mrpc stsb rte qnli"}; SEEDS=${SEEDS:-"0 1 2"}; ARMS=${ARMS:-"hedgehog taylor t2r"}
    TEACHER_SET=""
    T_RUN=3600
fi
DIR=$LOGS/glue_seeds
BUDGET="regime.distill_steps=$GLUE_DS regime.finetune_linear_steps=$GLUE_FL"

for seed in $SEEDS; do
    for task in $TASKS; do
        dir=$DIR/${task}_softmax_s$seed
        job teacher_${task}_s$seed $T_RUN - "$(keep_ckpt "$dir") && $PY run.py experiment=glue_minilm_teacher data=glue/$task task_name=glue_seeds hydra.run.dir=$dir $COMMON_NOSEED seed=$seed $GLUE_SET $BUDGET $TEACHER_SET && $PY experiments/export_teacher.py $dir $TEACH/${task}_s$seed --model-path $MINILM && rm -f $dir/.keep_checkpoints"
    done
done
for seed in $SEEDS; do
    for task in $TASKS; do
        for arm in $ARMS; do
            job glue_${task}_${arm}_s$seed $T_RUN teacher_${task}_s$seed "$PY run.py experiment=glue_minilm_$arm data=glue/$task task_name=glue_seeds hydra.run.dir=$DIR/${task}_${arm}_s$seed $COMMON_NOSEED seed=$seed $GLUE_SET $BUDGET regime.teacher_checkpoint=$TEACH/${task}_s$seed"
        done
    done
done

MIN_TIME=${MIN_TIME:-60} run_plan 30
finish
