#!/usr/bin/env bash
# Batch D: one ~9.5-minute sitting on one GPU (H200): finetuned-conversion of all-MiniLM-L6-v2 on six GLUE tasks
# with every linear attention, batch A's recipe (which ran out of time after Hedgehog, T2R and two 1+ELU arms):
#   (4) per task (CoLA, SST-2, MRPC, STS-B, RTE, QNLI) the softmax teacher is finetuned once (400 steps x 64; its
#       run is the softmax arm) and exported; every linear attention starts from that teacher: 100 distillation
#       steps (trainable maps) + 300 finetuning steps                                       -> $LOGS/glue/<task>_<attention>
#       QNLI: only its dev split ships offline, so the DataModule splits dev into train/val/test.
#   while the teachers train, the remaining slots run fillers:
#   (7) the MQAR ablations of batch C at seed 2 (their reference, mqar_seeds/hedgehog_s2, ran in batch C)
#                                                                                            -> $LOGS/ablation_mqar_seeds/<setting>_s2
#   (2) the MiniLM attention analysis with a longer distillation than the committed CPU run  -> $LOGS/analysis
# Results are packed into $OUT/batch_d.tar.gz, with $OUT/batch_d_summary.log.
#
#   OUT=/out HEDGEHOG_DATA_DIR=/data MINILM_DIR=/minilm bash experiments/gpu_batch_d.sh     # on the GPU host
#   SMOKE=1 MINILM_DIR=<folder> bash experiments/gpu_batch_d.sh                              # CPU check, tiny
set -uo pipefail
BATCH=batch_d
T0=$(date +%s)
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then TOTAL=${TOTAL_BUDGET_S:-1500}; else TOTAL=${TOTAL_BUDGET_S:-555}; fi
source "$(dirname "${BASH_SOURCE[0]}")/batch_common.sh"
MINILM=${MINILM_DIR:-minilm}
TEACH=$WORK/teachers
preflight || { finish; exit 1; }
if [ ! -f "$MINILM/config.json" ]; then say "FATAL: MINILM_DIR=$MINILM holds no config.json"; finish; exit 1; fi

if [ "$SMOKE" = 1 ]; then
    GLUE_TYPES="hedgehog elu"; TASKS="rte"; ABL_SEEDS=""
    GLUE_SET="model.name_or_path=$MINILM model.dtype=float32 data.max_train_samples=64 data.max_eval_samples=48 data.batch_size=8 data.eval_batch_size=16 trainer.val_check_interval=2 trainer.limit_val_batches=1"
    FT=3; DS=2; FL=2
    AN_ARGS="--num-train 32 --num-eval 8 --seq-len 64 --batch-size 8 --distill-steps 2 --maps elu,hedgehog,t2r"
    T_TEACH=900; T_GLUE=900; T_AN=900; T_MQAR=900
else
    # Hedgehog and T2R first (the comparison of batch A, now with every other map beside it from the same teachers)
    GLUE_TYPES="hedgehog t2r performer cosformer elu taylor"
    TASKS="cola sst2 mrpc stsb rte qnli"; ABL_SEEDS="2"
    GLUE_SET="model.name_or_path=$MINILM model.dtype=float32 data.batch_size=64 regime.finetune_lr=8e-5 regime.finetune_linear_lr=8e-5 trainer.val_check_interval=100 trainer.limit_val_batches=8 callbacks.model_checkpoint.every_n_train_steps=1000"
    FT=400; DS=100; FL=300
    AN_ARGS="--num-train 4096 --num-eval 256 --seq-len 128 --batch-size 32 --distill-steps 600"
    T_TEACH=200; T_GLUE=200; T_AN=200; T_MQAR=330
fi
SAFE=$(safe 25)

# --- the plan, highest priority first ------------------------------------------------------------------------
for task in $TASKS; do   # (4) softmax teachers: finetune once, export for the linear arms
    dir=$LOGS/glue/${task}_softmax
    job teacher_$task $T_TEACH - "$(keep_ckpt "$dir") && { $PY run.py experiment=glue_minilm_softmax data=glue/$task task_name=glue hydra.run.dir=$dir $COMMON $GLUE_SET $SAFE regime.finetune_steps=$FT; $PY experiments/export_teacher.py $dir $TEACH/$task --model-path $MINILM; } && rm -f $dir/.keep_checkpoints"
done
mqar_ablation_jobs "$ABL_SEEDS" $T_MQAR trainer.max_steps=6000 trainer.val_check_interval=500 $SAFE   # (7) fillers beside the teachers
job analysis_minilm_gpu $T_AN - "$PY experiments/analysis_attention.py --model minilm --model-path $MINILM --data-dir $DATA_DIR --out $LOGS/analysis --figures $LOGS/analysis/figures --tag minilm_gpu $AN_ARGS"
for att in $GLUE_TYPES; do   # (4) the linear arms, one attention type at a time over all tasks
    for task in $TASKS; do
        job glue_${task}_$att $T_GLUE teacher_$task "$PY run.py experiment=glue_minilm_$att data=glue/$task task_name=glue hydra.run.dir=$LOGS/glue/${task}_$att $COMMON $GLUE_SET $SAFE regime.teacher_checkpoint=$TEACH/$task regime.distill_steps=$DS regime.finetune_linear_steps=$FL"
    done
done

MIN_TIME=${MIN_TIME:-80} run_plan 35
finish
