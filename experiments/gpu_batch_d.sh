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
source "$(dirname "${BASH_SOURCE[0]}")/batch_common.sh"
preflight 1500 555 || { finish; exit 1; }   # budget: 1500 s with SMOKE=1, 555 s on the GPU
minilm_glue_recipe
if [ ! -f "$MINILM/config.json" ]; then say "FATAL: MINILM_DIR=$MINILM holds no config.json"; finish; exit 1; fi

if [ "$SMOKE" = 1 ]; then
    GLUE_TYPES="hedgehog elu"; TASKS="rte"; ABL_SEEDS=""
    T_TEACH=900; T_GLUE=900; T_AN=900; T_MQAR=900
else
    # Hedgehog and T2R first (the comparison of batch A, now with every other map beside it from the same teachers)
    GLUE_TYPES="hedgehog t2r performer cosformer elu taylor"
    TASKS="cola sst2 mrpc stsb rte qnli"; ABL_SEEDS="2"
    T_TEACH=200; T_GLUE=200; T_AN=200; T_MQAR=330
fi
SAFE=$(safe 25)

# --- the plan, highest priority first ------------------------------------------------------------------------
for task in $TASKS; do glue_teacher_job $task glue $LOGS/glue/${task}_softmax; done   # (4) softmax teachers
mqar_ablation_jobs "$ABL_SEEDS" $T_MQAR trainer.max_steps=6000 trainer.val_check_interval=500 $SAFE   # (7) fillers beside the teachers
minilm_analysis_job $T_AN   # (2)
for att in $GLUE_TYPES; do   # (4) the linear arms, one attention type at a time over all tasks
    for task in $TASKS; do glue_arm_job $task $att; done
done

MIN_TIME=${MIN_TIME:-80} run_plan 35
finish
