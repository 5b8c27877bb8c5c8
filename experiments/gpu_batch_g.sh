#!/usr/bin/env bash
# Batch G: the pretrained-conversion recipe on SmolLM2-135M-Instruct at equal budgets, on one GPU.
#   WikiText-2 (experiment=wikitext_smollm2_<arm>, data=text_mix): attention transfer (output MSE, 400 steps) then
#   LoRA (400 steps), 8 x 1024 tokens a step, for every arm:
#     softmax + LoRA, hedgehog, hedgehog_window (sliding window 64 + Hedgehog)      seeds $SEEDS
#     t2r, elu, performer, cosformer, taylor                                         seed 0
#     the base model, zero-shot                                                       -> $LOGS/wikitext_smollm2/<arm>_s<seed>
#   SAMSum (experiment=samsum_smollm2_<arm>): LoRA (300 steps) from the WikiText run's transfer of the same arm and
#   seed (regime.distilled_from), ROUGE on the first $SAMSUM_TEST held-out dialogues  -> $LOGS/samsum_smollm2/<arm>_s<seed>
# Every run ends by its step count (no deadline): a run that cannot finish pauses $PAUSE_MARGIN seconds before the
# end of the sitting (checkpoint after an optimizer step, exit 3) and continues when the batch is run again in the
# next sitting (finished runs are skipped); _jobs/estimate.txt says how many sittings are left. $WORKERS runs share
# the GPU.
# The text_mix corpus (and the teacher's samples, from the cache in $HEDGEHOG_CACHE_DIR) is built once before the
# runs start, with data.teacher.tokens=$TEACHER_TOKENS.
#
#   OUT=/out HEDGEHOG_DATA_DIR=/data HEDGEHOG_CACHE_DIR=/cache TEACHER_TOKENS=400000 bash experiments/gpu_batch_g.sh
#   SMOKE=1 bash experiments/gpu_batch_g.sh            # CPU check: a tiny random Llama, a few steps per stage
#   SEEDS=1 MAIN_ARMS="hedgehog_window softmax hedgehog" EARLIER_ARMS="" ZEROSHOT=0 WORKERS=1 ...   # one seed's
#       main arms, one run at a time (per-stage tokens/s measured alone)
set -uo pipefail
BATCH=batch_g
T0=$(date +%s)
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then TOTAL=${TOTAL_BUDGET_S:-1800}; else TOTAL=${TOTAL_BUDGET_S:-540}; fi
LOGGER=csv
PAUSE_MARGIN=${PAUSE_MARGIN:-60}
source "$(dirname "${BASH_SOURCE[0]}")/batch_common.sh"
SEEDS=${SEEDS:-"0 1 2"}
TEACHER_TOKENS=${TEACHER_TOKENS:-0}
SAMSUM_TEST=${SAMSUM_TEST:-256}
MAIN_ARMS=${MAIN_ARMS:-"hedgehog hedgehog_window softmax"}
ZEROSHOT=${ZEROSHOT:-1}   # 0: leave out the zero-shot base model (it has no seed)
EXTRA=${EXTRA:-}          # more Hydra overrides for every WikiText and SAMSum run (e.g. matmul_precision=high);
                          # with a WORK_DIR of their own, since the runs' folders do not name them
EARLIER_ARMS=${EARLIER_ARMS-"t2r elu performer cosformer taylor"}  # set empty for none

preflight || { finish; exit 1; }

if [ "$SMOKE" = 1 ]; then
    MODEL=${SMOKE_MODEL:?SMOKE=1 needs SMOKE_MODEL=<a tiny Llama folder>}
    WT_SET="model.name_or_path=$MODEL data.sources=[wikitext_valid] data.seq_len=32 data.batch_size=4 data.eval_batch_size=4 data.max_eval_blocks=4 regime.distill_steps=3 regime.finetune_steps=3 trainer.val_check_interval=2 trainer.limit_val_batches=1"
    ZS_SET="model.name_or_path=$MODEL data.seq_len=32 data.eval_batch_size=4 data.max_eval_blocks=4"
    SS_SET="model.name_or_path=$MODEL data.max_train_samples=8 data.max_eval_samples=4 data.max_length=96 data.max_new_tokens=6 data.batch_size=4 data.eval_batch_size=4 trainer.val_check_interval=2 trainer.limit_val_batches=1"
    SS_STEPS="regime.finetune_steps=3"
    WINDOW="attention.options.window=4"   # the tiny model's sequences are 32 tokens
    T_RUN=900
else
    MODEL=smollm2
    WT_SET="model.name_or_path=$MODEL"
    ZS_SET="$WT_SET"
    SS_SET="model.name_or_path=$MODEL data.max_eval_samples=$SAMSUM_TEST"
    SS_STEPS=""
    WINDOW=""
    T_RUN=3000
fi
TEACHER="data.teacher.tokens=$TEACHER_TOKENS"

# The corpus and the dequantised model, once, before runs share them.
say "building the text_mix corpus"
$PY experiments/build_corpus.py experiment=wikitext_smollm2_hedgehog $WT_SET $TEACHER > "$JOBS/corpus.log" 2>&1 \
    || { say "FATAL: corpus build failed (see _jobs/corpus.log)"; finish; exit 1; }
grep -A3 '"tokens"' "$JOBS/corpus.log" | head -5 | sed "s/^/[$BATCH corpus] /"

WT=$LOGS/wikitext_smollm2
SS=$LOGS/samsum_smollm2
options() { [ "$1" = hedgehog_window ] && echo "$WINDOW"; }
wt_job() {  # wt_job ARM SEED
    local arm=$1 seed=$2 dir=$WT/${1}_s$2
    local keep=""
    [ "$arm" != softmax ] && keep="$(keep_ckpt "$dir") && "
    job wt_${arm}_s$seed $T_RUN - "${keep}$PY run.py experiment=wikitext_smollm2_$arm $WT_SET $(options "$arm") $TEACHER $EXTRA hydra.run.dir=$dir $COMMON_NOSEED seed=$seed"
}
ss_job() {  # ss_job ARM SEED
    local arm=$1 seed=$2 dir=$SS/${1}_s$2 from=""
    local after=-
    if [ "$arm" != softmax ]; then
        from="regime.distilled_from=$WT/${arm}_s$seed"
        after=wt_${arm}_s$seed
    fi
    job ss_${arm}_s$seed $T_RUN $after "$PY run.py experiment=samsum_smollm2_$arm $SS_SET $SS_STEPS $(options "$arm") $from $EXTRA hydra.run.dir=$dir $COMMON_NOSEED seed=$seed && rm -f $WT/${arm}_s$seed/.keep_checkpoints"
}

FIRST=${SEEDS%% *}
for arm in $MAIN_ARMS; do wt_job "$arm" "$FIRST"; done
for arm in $MAIN_ARMS; do ss_job "$arm" "$FIRST"; done
if [ "$ZEROSHOT" = 1 ]; then
    job wt_zeroshot $T_RUN - "$PY run.py experiment=wikitext_smollm2_zeroshot $ZS_SET hydra.run.dir=$WT/zeroshot $COMMON_NOSEED seed=0"
    job ss_zeroshot $T_RUN - "$PY run.py experiment=samsum_smollm2_zeroshot $SS_SET hydra.run.dir=$SS/zeroshot $COMMON_NOSEED seed=0"
fi
for seed in ${SEEDS#"$FIRST"}; do
    for arm in $MAIN_ARMS; do wt_job "$arm" "$seed"; done
done
for arm in $EARLIER_ARMS; do wt_job "$arm" "$FIRST"; done
for seed in ${SEEDS#"$FIRST"}; do
    for arm in $MAIN_ARMS; do ss_job "$arm" "$seed"; done
done

MIN_TIME=${MIN_TIME:-60} run_plan 25
finish
