#!/usr/bin/env bash
# Batch B: one ~9-minute sitting on one GPU (H100), with SmolLM2-135M-Instruct present ($SMOLLM2_GGUF):
#   (6) efficiency first, ALONE on the GPU: training-step and generation throughput of SmolLM2 converted to
#       hedgehog / t2r / elu vs softmax (experiments/efficiency.py)                       -> $LOGS/efficiency
#   then ~8 jobs at a time:
#   (5) pretrained-conversion of SmolLM2 with hedgehog, t2r, elu:
#       WikiText-2 test perplexity after distillation (a distill-only run) and after LoRA finetuning (a second run
#       that continues from the first run's distilled weights: its distill stage is copied in, not redone), plus
#       the base model (zero-shot) and softmax + LoRA                                        -> $LOGS/wikitext_smollm2/<arm>_<phase>
#       SAMSum ROUGE-1/2/L: base model zero-shot, softmax + LoRA, each linear attention + LoRA, on the first
#       $SAMSUM_TEST dialogues of the shared test file (a subset of SAMSum's *train* split)  -> $LOGS/samsum_smollm2/<arm>
#   (2) attention analysis on SmolLM2 layers (WikiText), before/after distillation           -> $LOGS/analysis
#   (7) GLUE ablations of Hedgehog on SST-2 (MiniLM): a softmax teacher finetuned here, the default Hedgehog arm
#       and, from the same teacher: feature dim 16 / 64 (multirun), softmax activation, random init, no
#       distillation (distill_steps=0), MSE instead of cross-entropy distillation          -> $LOGS/ablation_glue/<setting>
#   SKIP_EFFICIENCY=1 leaves (6) out (run experiments/efficiency.py on its own), SKIP_GLUE_ABLATIONS=1 leaves (7) out.
#   Optional: GLUE_ARMS_B="task:attention ..." re-runs GLUE arms that batch A did not finish (each with a teacher
#   finetuned here, same recipe and seed).
# Results are packed into $OUT/batch_b.tar.gz, with $OUT/batch_b_summary.log.
#
#   OUT=/out HEDGEHOG_DATA_DIR=/data MINILM_DIR=/minilm SMOLLM2_GGUF=/smol/x.gguf bash experiments/gpu_batch_b.sh
#   SMOKE=1 bash experiments/gpu_batch_b.sh                                                   # CPU check, tiny
set -uo pipefail
BATCH=batch_b
source "$(dirname "${BASH_SOURCE[0]}")/batch_common.sh"
minilm_glue_recipe
SMOL=${SMOLLM2_GGUF:-smollm2}
GLUE_ARMS_B=${GLUE_ARMS_B:-}

preflight 1500 525 || { finish; exit 1; }   # budget: 1500 s with SMOKE=1, 525 s on the GPU
if [ "$SMOL" != smollm2 ] && [ ! -f "$SMOL" ]; then say "FATAL: SMOLLM2_GGUF=$SMOL is not a file"; finish; exit 1; fi

if [ "$SMOKE" = 1 ]; then
    LINEAR="hedgehog elu"
    SAMSUM_TEST=4
    WT_SET="model.name_or_path=$SMOL data.seq_len=64 data.batch_size=2 data.eval_batch_size=2 data.max_train_blocks=8 data.max_eval_blocks=4 trainer.val_check_interval=2 trainer.limit_val_batches=1"
    SS_SET="model.name_or_path=$SMOL data.max_length=256 data.max_new_tokens=8 data.batch_size=2 data.eval_batch_size=2 data.max_train_samples=8 data.max_eval_samples=$SAMSUM_TEST trainer.val_check_interval=2 trainer.limit_val_batches=1"
    DS=2; FS=2
    EFF_ARGS="--smoke"
    AN_ARGS="--num-train 4 --num-eval 2 --seq-len 64 --batch-size 2 --distill-steps 2 --maps elu,hedgehog,t2r"
    GLUE_TASK=rte; FEAT="16"
    T_WT=900; T_SS=900; T_AN=900; T_EFF=600; T_TEACH=900; T_GLUE=900
else
    LINEAR="hedgehog t2r elu"
    SAMSUM_TEST=${SAMSUM_TEST:-256}
    # WikiText-2 under SmolLM2's tokenizer, 512-token blocks; trained (distil, LoRA) on wiki.valid.tokens.
    WT_SET="model.name_or_path=$SMOL data.seq_len=512 data.batch_size=8 data.eval_batch_size=16 trainer.val_check_interval=100 trainer.limit_val_batches=8 callbacks.model_checkpoint.every_n_train_steps=1000"
    # SAMSum: prompt + summary, loss on the summary; test = greedy generation on the first $SAMSUM_TEST test dialogues.
    SS_SET="model.name_or_path=$SMOL data.batch_size=8 data.eval_batch_size=32 data.max_eval_samples=$SAMSUM_TEST trainer.val_check_interval=100 trainer.limit_val_batches=4 callbacks.model_checkpoint.every_n_train_steps=1000"
    DS=150; FS=250
    EFF_ARGS="--seq-lens 1024,4096,16384 --tokens-per-batch 16384 --prompt-len 256 --new-tokens 256 --gen-batch 16"
    AN_ARGS="--num-train 256 --num-eval 16 --seq-len 256 --batch-size 8 --distill-steps 200"
    GLUE_TASK=sst2; FEAT="16,64"   # MiniLM on GLUE: minilm_glue_recipe (batch_common.sh)
    T_WT=330; T_SS=300; T_AN=240; T_EFF=150; T_TEACH=200; T_GLUE=220
fi
SAFE=$(safe 30)      # training stops 30 s before the job's deadline (test + results still happen)
SAFE_SS=$(safe 75)   # SAMSum: generation on the test dialogues needs longer
SAFE_FIRST=$(safe 150)  # the distill-only WikiText run leaves time for the LoRA run that follows it in the same job

# --- (6) efficiency, alone on the device ---------------------------------------------------------------------
efficiency_alone "$T_EFF" --model-path "$SMOL" --out "$LOGS/efficiency" $EFF_ARGS

# --- the plan, highest priority first ------------------------------------------------------------------------
WT=$LOGS/wikitext_smollm2
for att in $LINEAR; do   # (5) WikiText: distil -> test; then continue with LoRA -> test
    d=$WT/${att}_distilled
    f=$WT/${att}_lora
    job wikitext_smollm2_$att $T_WT - "$(keep_ckpt "$d") && $PY run.py experiment=wikitext_smollm2_$att task_name=wikitext_smollm2 hydra.run.dir=$d $COMMON $WT_SET $SAFE_FIRST regime.distill_steps=$DS regime.finetune_steps=0 && mkdir -p $f/checkpoints && { [ ! -d $d/checkpoints/distill ] || cp -r $d/checkpoints/distill $f/checkpoints/; } && rm -f $d/.keep_checkpoints && $PY run.py experiment=wikitext_smollm2_$att task_name=wikitext_smollm2 hydra.run.dir=$f $COMMON $WT_SET $SAFE regime.distill_steps=$DS regime.finetune_steps=$FS"
done
for att in $LINEAR; do   # (5) SAMSum: distil + LoRA -> ROUGE
    job samsum_smollm2_$att $T_SS - "$PY run.py experiment=samsum_smollm2_$att task_name=samsum_smollm2 hydra.run.dir=$LOGS/samsum_smollm2/$att $COMMON $SS_SET $SAFE_SS regime.distill_steps=$DS regime.finetune_steps=$FS"
done
job samsum_smollm2_zeroshot $T_SS - "$PY run.py experiment=samsum_smollm2_zeroshot task_name=samsum_smollm2 hydra.run.dir=$LOGS/samsum_smollm2/zeroshot $COMMON $SS_SET $SAFE_SS"
job samsum_smollm2_softmax $T_SS - "$PY run.py experiment=samsum_smollm2_softmax task_name=samsum_smollm2 hydra.run.dir=$LOGS/samsum_smollm2/softmax $COMMON $SS_SET $SAFE_SS regime.finetune_steps=$FS"
job wikitext_smollm2_zeroshot $T_WT - "$PY run.py experiment=wikitext_smollm2_zeroshot task_name=wikitext_smollm2 hydra.run.dir=$WT/softmax_zeroshot $COMMON $WT_SET $SAFE"
job wikitext_smollm2_softmax $T_WT - "$PY run.py experiment=wikitext_smollm2_softmax task_name=wikitext_smollm2 hydra.run.dir=$WT/softmax_lora $COMMON $WT_SET $SAFE regime.finetune_steps=$FS"
job analysis_smollm2 $T_AN - "$PY experiments/analysis_attention.py --model smollm2 --model-path $SMOL --data-dir $DATA_DIR --out $LOGS/analysis --figures $LOGS/analysis/figures $AN_ARGS"

# (7) GLUE ablations of Hedgehog on one task, all from one teacher finetuned here
if [ -z "${SKIP_GLUE_ABLATIONS:-}" ]; then
    glue_teacher_job $GLUE_TASK ablation_glue $LOGS/ablation_glue/teacher
    G="experiment=glue_minilm_hedgehog data=glue/$GLUE_TASK task_name=ablation_glue $COMMON $GLUE_SET $SAFE regime.teacher_checkpoint=$TEACH/$GLUE_TASK regime.distill_steps=$GLUE_DS regime.finetune_linear_steps=$GLUE_FL"
    A=$LOGS/ablation_glue
    job abl_glue_reference $T_GLUE teacher_$GLUE_TASK "$PY run.py $G hydra.run.dir=$A/reference"
    job abl_glue_no_distill $T_GLUE teacher_$GLUE_TASK "$PY run.py -m $G hydra.sweep.dir=$A/no_distill regime.distill_steps=0"
    job abl_glue_distill_mse $T_GLUE teacher_$GLUE_TASK "$PY run.py ${G/experiment=glue_minilm_hedgehog/experiment=ablation_glue_distill_mse} hydra.run.dir=$A/distill_mse"
    job abl_glue_activation $T_GLUE teacher_$GLUE_TASK "$PY run.py -m $G hydra.sweep.dir=$A/activation attention.options.activation=softmax"
    job abl_glue_init $T_GLUE teacher_$GLUE_TASK "$PY run.py -m $G hydra.sweep.dir=$A/init attention.options.init=random"
    job abl_glue_feature_dim $((2 * T_GLUE)) teacher_$GLUE_TASK "$PY run.py -m $G hydra.sweep.dir=$A/feature_dim attention.options.feature_dim=$FEAT"
fi

# Optional leftovers of batch A: GLUE_ARMS_B="qnli:taylor cola:cosformer" (each task gets its own teacher here)
for arm in $GLUE_ARMS_B; do
    task=${arm%%:*}; att=${arm##*:}
    grep -q "^teacher_$task " "$PLAN" || glue_teacher_job $task glue $LOGS/glue/${task}_softmax
    glue_arm_job $task $att
done

run_plan 35
finish
