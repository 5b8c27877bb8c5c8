#!/usr/bin/env bash
# The reproduction experiments at CPU scale: one batch of run.py jobs for a 2-core machine without a GPU (about 90
# minutes), run one after another by experiments/batch_runner.py. Same experiment configs as the GPU batches, much
# smaller budgets:
#
#   (4) finetuned-conversion of all-MiniLM-L6-v2 on GLUE (SST-2 unless GLUE_TASKS says more): the softmax
#       teacher once per task, then every linear attention from it (distil, then finetune) -> $LOGS/glue/<task>_<attention>
#   (7) ablations of Hedgehog on the same teacher: no distillation, MSE distillation, softmax-over-features,
#       random init, feature_dim 16                                                  -> $LOGS/ablation_glue/<name>
#   (5) pretrained-conversion of SmolLM2-135M on WikiText-2: distil -> test, then LoRA -> test, for Hedgehog,
#       T2R and 1+ELU (nothing to distil: tested as converted); the base model; softmax + LoRA
#                                                                          -> $LOGS/wikitext_smollm2/<arm>_<phase>
#   (3) small GPTs trained from scratch on WikiText-2 (valid split), tested on its test split -> $LOGS/wikitext/<att>
#   (1) MQAR, CPU-sized setting (lr 3e-3, 600 steps: the plateau; see cpu_mqar_recipe.sh) -> $LOGS/cpu_mqar/<attention>
#   (7) MQAR ablations of Hedgehog (feature_dim, activation, init)                -> $LOGS/ablation_mqar/<name>
#
#   LOGS=/tmp/cpu_runs/cpu_$(date +%F) bash experiments/cpu_batch.sh
#   python experiments/collect.py $LOGS          # tables and figures into experiments/results, experiments/figures
#
# Every job is a plain run.py command (seed 0) with a timeout; a job comes after the jobs whose output it reads (a
# GLUE arm after its task's teacher). Rerunning the script skips finished runs (their results.json is complete) and
# resumes unfinished ones from their last checkpoint. ONLY="glue wikitext" runs some parts only;
# ONLY=glue GLUE_TASKS="cola mrpc stsb rte qnli" GLUE_TYPES="hedgehog t2r elu performer cosformer" adds GLUE tasks.
# WORKERS=2 runs two jobs at a time (the cores shared between them). The plan is $LOGS/_jobs/plan.txt, each job's
# output $LOGS/_jobs/<job>.log; $LOGS/_jobs/jobs.jsonl gets every job that ended (every invocation appends) and
# summary.json lists them all, as collect.py reads it. The runner deletes the checkpoints of finished runs (a run
# that later jobs continue from keeps them while it must). PY names the interpreter (default python).
set -uo pipefail
BATCH=cpu
LOGS=${LOGS:-/tmp/cpu_runs/cpu_$(date +%F)}
SECTIONS=${ONLY:-"glue ablation_glue wikitext_smollm2 wikitext cpu_mqar ablation_mqar"}
ONLY=""                      # sections here, not the runner's job names
PYTHON=${PY:-python}
WORKERS=${WORKERS:-1}
OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))}   # threads per job
MKL_NUM_THREADS=${MKL_NUM_THREADS:-$OMP_NUM_THREADS}
source "$(dirname "${BASH_SOURCE[0]}")/batch_common.sh"
TOTAL=${TOTAL_BUDGET_S:-604800}   # a week: no limit in practice, each job has its own timeout
JOB_HISTORY=$JOBS/jobs.jsonl
COMMON="trainer=cpu logger=many trainer.enable_progress_bar=false trainer.num_sanity_val_steps=0 trainer.log_every_n_steps=10 seed=0"
wanted() { [[ " $SECTIONS " == *" $1 "* ]]; }
say "git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, torch $($PY -c 'import torch; print(torch.__version__)')"

# A section is planned by one invocation at a time: the first to plan it claims it while its jobs run.
claim() { local f=$LOGS/$1.claimed; if [ -e "$f" ] && [ "$(cat "$f")" != $$ ] && kill -0 "$(cat "$f")" 2>/dev/null; then say "skip $1: claimed by process $(cat "$f")"; return 1; fi; echo $$ > "$f"; }

# --- (4) + (7) GLUE, all-MiniLM-L6-v2 ----------------------------------------------------------------------------
# GLUE_TASKS (default sst2) and GLUE_TYPES (default all six linear attentions) choose the arms; each task is a
# section of its own, so two invocations share the tasks.
GLUE_SET="model.name_or_path=minilm model.dtype=float32 data.batch_size=32 data.max_length=64 data.eval_batch_size=64 regime.finetune_lr=8e-5 regime.finetune_linear_lr=8e-5 trainer.val_check_interval=100 trainer.limit_val_batches=4"
FT=300; DS=60; FL=200
GLUE_TASKS=${GLUE_TASKS:-sst2}
GLUE_TYPES=${GLUE_TYPES:-"hedgehog t2r elu performer cosformer taylor"}
TEACHER=$LOGS/teachers/sst2   # the ablations below start from the SST-2 teacher
if wanted glue; then
    for task in $GLUE_TASKS; do
        claim glue_$task || continue
        d=$LOGS/glue/${task}_softmax
        job teacher_$task 2400 - "mkdir -p $d && touch $d/.keep_checkpoints && $PY run.py experiment=glue_minilm_softmax data=glue/$task task_name=glue hydra.run.dir=$d $COMMON $GLUE_SET regime.finetune_steps=$FT && $PY experiments/export_teacher.py $d $LOGS/teachers/$task --model-path minilm"
        for att in $GLUE_TYPES; do
            job glue_${task}_$att 1800 teacher_$task "$PY run.py experiment=glue_minilm_$att data=glue/$task task_name=glue hydra.run.dir=$LOGS/glue/${task}_$att $COMMON $GLUE_SET regime.teacher_checkpoint=$LOGS/teachers/$task regime.distill_steps=$DS regime.finetune_linear_steps=$FL"
        done
    done
fi
if wanted ablation_glue; then
    after=-   # the SST-2 teacher, if this plan trains it
    grep -q "^teacher_sst2 " "$PLAN" && after=teacher_sst2
    ARM="experiment=glue_minilm_hedgehog data=glue/sst2 task_name=ablation_glue $COMMON $GLUE_SET regime.teacher_checkpoint=$TEACHER regime.distill_steps=$DS regime.finetune_linear_steps=$FL"
    A=$LOGS/ablation_glue
    job abl_glue_no_distill 1800 $after "$PY run.py $ARM hydra.run.dir=$A/no_distill regime.distill_steps=0"
    job abl_glue_distill_mse 1800 $after "$PY run.py ${ARM/experiment=glue_minilm_hedgehog/experiment=ablation_glue_distill_mse} hydra.run.dir=$A/distill_mse"
    job abl_glue_activation_softmax 1800 $after "$PY run.py $ARM hydra.run.dir=$A/activation_softmax attention.options.activation=softmax"
    job abl_glue_init_random 1800 $after "$PY run.py $ARM hydra.run.dir=$A/init_random attention.options.init=random"
    job abl_glue_feature_dim_16 1800 $after "$PY run.py $ARM hydra.run.dir=$A/feature_dim_16 attention.options.feature_dim=16"
fi

# --- (5) SmolLM2-135M on WikiText-2 --------------------------------------------------------------------------
WT_SET="data.seq_len=256 data.batch_size=2 data.eval_batch_size=4 data.max_eval_blocks=32 trainer.val_check_interval=20 trainer.limit_val_batches=4"
SDS=40; SFS=40
if wanted wikitext_smollm2; then
    W=$LOGS/wikitext_smollm2
    job wikitext_smollm2_zeroshot 1200 - "$PY run.py experiment=wikitext_smollm2_zeroshot task_name=wikitext_smollm2 hydra.run.dir=$W/softmax_zeroshot $COMMON $WT_SET"
    for att in hedgehog t2r elu; do
        d=$W/${att}_distilled; f=$W/${att}_lora
        job wikitext_smollm2_$att 2400 - "mkdir -p $d && touch $d/.keep_checkpoints && $PY run.py experiment=wikitext_smollm2_$att task_name=wikitext_smollm2 hydra.run.dir=$d $COMMON $WT_SET regime.distill_steps=$SDS regime.finetune_steps=0 && mkdir -p $f/checkpoints && { [ ! -d $d/checkpoints/distill ] || cp -r $d/checkpoints/distill $f/checkpoints/; } && rm -f $d/.keep_checkpoints && $PY run.py experiment=wikitext_smollm2_$att task_name=wikitext_smollm2 hydra.run.dir=$f $COMMON $WT_SET regime.distill_steps=$SDS regime.finetune_steps=$SFS"
    done
    job wikitext_smollm2_softmax 1800 - "$PY run.py experiment=wikitext_smollm2_softmax task_name=wikitext_smollm2 hydra.run.dir=$W/softmax_lora $COMMON $WT_SET regime.finetune_steps=$SFS"
fi

# --- (3) train from scratch on WikiText-2 ----------------------------------------------------------------------
WIKI_SET="model.d_model=128 model.n_layers=2 model.n_heads=2 data.seq_len=128 data.batch_size=16 regime.lr=2e-3 regime.warmup_steps=30 trainer.max_steps=400 trainer.val_check_interval=200 trainer.limit_val_batches=10"
if wanted wikitext && claim wikitext; then
    # Taylor last, with a shorter limit: its 1 + 64 + 64^2 = 4161 features per head are slow on a CPU
    for att in softmax hedgehog elu performer cosformer t2r; do
        job wikitext_$att 1200 - "$PY run.py experiment=wikitext_gpt_$att task_name=wikitext hydra.run.dir=$LOGS/wikitext/$att $COMMON $WIKI_SET"
    done
    job wikitext_taylor 600 - "$PY run.py experiment=wikitext_gpt_taylor task_name=wikitext hydra.run.dir=$LOGS/wikitext/taylor $COMMON $WIKI_SET"
fi

# --- (1) + (7) MQAR ----------------------------------------------------------------------------------------------
# the setting of the committed cpu_2026-11-23 runs (experiment=mqar's defaults then; it stays on the 0.25 plateau):
# the recipe that learns is experiment=mqar's default now and runs in experiments/cpu_mqar_recipe.sh
MQAR_SET="data.num_train=20000 regime.lr=3e-3 regime.weight_decay=0.1 trainer.max_steps=600 trainer.val_check_interval=100"
if wanted cpu_mqar && claim cpu_mqar; then
    for att in softmax hedgehog taylor elu performer cosformer t2r; do
        job mqar_$att 900 - "$PY run.py experiment=mqar_$att task_name=cpu_mqar hydra.run.dir=$LOGS/cpu_mqar/$att $COMMON $MQAR_SET"
    done
fi
if wanted ablation_mqar && claim ablation_mqar; then
    A=$LOGS/ablation_mqar
    job abl_mqar_feature_dim 1800 - "$PY run.py -m experiment=mqar_hedgehog task_name=ablation_mqar hydra.sweep.dir=$A/feature_dim $COMMON $MQAR_SET attention.options.feature_dim=8,64"
    job abl_mqar_activation 900 - "$PY run.py experiment=mqar_hedgehog task_name=ablation_mqar hydra.run.dir=$A/activation_softmax $COMMON $MQAR_SET attention.options.activation=softmax"
    job abl_mqar_init 900 - "$PY run.py experiment=mqar_hedgehog task_name=ablation_mqar hydra.run.dir=$A/init_random $COMMON $MQAR_SET attention.options.init=random"
fi
run_plan 0
say "done"
