#!/usr/bin/env bash
# Batch C: one ~9.5-minute sitting on one GPU (H200), small models only, filling what batches A and B left:
#   (6) efficiency first, ALONE on the GPU: training-step and generation throughput of SmolLM2-135M's architecture
#       (random weights) converted to hedgehog / t2r / elu, and hedgehog on the PyTorch path, vs softmax  -> $LOGS/efficiency
#   then up to $WORKERS jobs at a time:
#   (3) WikiText-2 from scratch, batch A's GPT and budget, every attention type, seeds 0 and 1 -> $LOGS/wikitext/<attention>_s<seed>
#   (1) MQAR with the recipe that learns (experiment=mqar as shipped: lr 1e-3, no weight decay, 100K examples),
#       6,000 steps, every attention type (Taylor included), seeds 0, 1, 2                   -> $LOGS/mqar_seeds/<attention>_s<seed>
#   (7) MQAR ablations of Hedgehog at the same recipe: feature_dim 16 and 64 (default 32), softmax-over-features
#       activation, random init; seeds 0 and 1                                               -> $LOGS/ablation_mqar_seeds/<setting>_s<seed>
# Results (results.json, CSV metrics, offline W&B runs; no checkpoints) are packed into $OUT/batch_c.tar.gz, with
# $OUT/batch_c_summary.log.
#
#   OUT=/out HEDGEHOG_DATA_DIR=/data bash experiments/gpu_batch_c.sh      # on the GPU host
#   SMOKE=1 bash experiments/gpu_batch_c.sh                                # CPU check, tiny
set -uo pipefail
BATCH=batch_c
source "$(dirname "${BASH_SOURCE[0]}")/batch_common.sh"
preflight 1500 555 || { finish; exit 1; }   # budget: 1500 s with SMOKE=1, 555 s on the GPU

if [ "$SMOKE" = 1 ]; then
    TYPES="softmax hedgehog"; WIKI_SEEDS="0"; MQAR_SEEDS="0 1"; ABL_SEEDS="0"
    WIKI_SET="model.d_model=32 model.n_layers=1 model.n_heads=2 data.seq_len=32 data.batch_size=4 trainer.max_steps=3 trainer.val_check_interval=2 trainer.limit_val_batches=2 trainer.limit_test_batches=2 regime.warmup_steps=1"
    MQAR_SET="data.num_train=256 data.num_val=32 data.num_test=32 data.batch_size=16 trainer.max_steps=4 trainer.val_check_interval=2 regime.warmup_steps=1"
    EFF_ARGS="--smoke --arms softmax,hedgehog"
    T_EFF=600; T_WIKI=600; T_MQAR=600
else
    TYPES="softmax hedgehog taylor elu performer cosformer t2r"; WIKI_SEEDS="0 1"; MQAR_SEEDS="0 1 2"; ABL_SEEDS="0 1"
    # batch A's WikiText setting (gpt_small: 4 layers, d 256, 4 heads, 256-token blocks; 250 steps x 32 blocks)
    WIKI_SET="data.batch_size=32 regime.lr=1e-3 regime.warmup_steps=50 trainer.max_steps=250 trainer.val_check_interval=125 trainer.limit_val_batches=10"
    # the CPU recipe of experiments/cpu_mqar_recipe.sh at its longer length
    MQAR_SET="trainer.max_steps=6000 trainer.val_check_interval=500"
    EFF_ARGS="--random-weights benchmarks/smollm2_135m_config.json --arms softmax,hedgehog,t2r,elu,hedgehog-torch --seq-lens 1024,4096,16384 --tokens-per-batch 16384 --prompt-len 1024 --new-tokens 128 --gen-batch 16"
    T_EFF=${T_EFF:-200}; T_WIKI=200; T_MQAR=330
fi
SAFE=$(safe 25)

# --- (6) efficiency, alone on the device ---------------------------------------------------------------------
efficiency_alone "$T_EFF" --out "$LOGS/efficiency" $EFF_ARGS

# --- the plan, highest priority first ------------------------------------------------------------------------
for seed in $WIKI_SEEDS; do   # (3)
    for att in $TYPES; do
        job wikitext_${att}_s$seed $T_WIKI - "$PY run.py experiment=wikitext_gpt_$att task_name=wikitext hydra.run.dir=$LOGS/wikitext/${att}_s$seed $COMMON_NOSEED seed=$seed $WIKI_SET $SAFE"
    done
done
for seed in $MQAR_SEEDS; do   # (1)
    for att in $TYPES; do
        job mqar_${att}_s$seed $T_MQAR - "$PY run.py experiment=mqar_$att task_name=mqar_seeds hydra.run.dir=$LOGS/mqar_seeds/${att}_s$seed $COMMON_NOSEED seed=$seed $MQAR_SET $SAFE"
    done
done
mqar_ablation_jobs "$ABL_SEEDS" $T_MQAR $MQAR_SET $SAFE   # (7)

MIN_TIME=${MIN_TIME:-90} run_plan 35
finish
