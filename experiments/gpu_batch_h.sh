#!/usr/bin/env bash
# Batch H: MQAR in the paper's setting (experiment=mqar_zoology: Zoology's task, 2-layer attention-only models,
# 25,000 steps x 256 sequences), every attention type at equal budgets, over as many sittings as it takes.
#   PHASE=sweep (default): every type x the four learning rates of hparams_search/mqar_zoology_lr, seed 0
#                          -> $LOGS/mqar_zoology/<attention>_lr<lr>_s0
#   PHASE=seeds: seeds 1 and 2 of every type at the learning rate its seed-0 runs chose on validation (the
#                chosen rows of experiments/collect.py's mqar_zoology_lr table over this batch's runs; test accuracy
#                takes no part)          -> $LOGS/mqar_zoology/<attention>_lr<lr>_s<seed>
# Every run ends at its step count: one that cannot finish in this sitting pauses $PAUSE_MARGIN s before the
# sitting ends (checkpoint, exit 3) and the same command in the next sitting continues it (finished runs return
# at once); _jobs/estimate.txt says how many sittings are left, from the measured seconds per step. The run
# folders must outlive the sitting: consecutive calls on one machine keep them; to move to another machine, set
# PACK_PAUSED=1 (the tarball then holds the paused runs' checkpoints, ~15 MB each) and RESTORE=<that tarball>.
#
#   OUT=/out bash experiments/gpu_batch_h.sh                    # on the GPU host: one sitting of the sweep
#   PHASE=seeds OUT=/out bash experiments/gpu_batch_h.sh        # once every sweep run is complete
#   SMOKE=1 bash experiments/gpu_batch_h.sh                     # CPU check: a tiny task, a few steps a sitting
set -uo pipefail
BATCH=batch_h
PAUSE_MARGIN=${PAUSE_MARGIN:-45}
source "$(dirname "${BASH_SOURCE[0]}")/batch_common.sh"
PHASE=${PHASE:-sweep}
if [ -n "${RESTORE:-}" ]; then
    tar xzf "$RESTORE" -C "$WORK" && say "restored run folders from $RESTORE"
fi
preflight 900 540 || { finish; exit 1; }

if [ "$SMOKE" = 1 ]; then
    TYPES="softmax hedgehog"; LRS="1.0e-3 1.0e-2"
    SET="data.vocab_size=64 data.seq_len=32 data.num_kv_pairs=4 data.num_train=512 data.num_val=32 data.num_test=32 data.batch_size=16 model.d_model=16 trainer.max_steps=6 trainer.val_check_interval=3 regime.warmup_steps=2"
    T_RUN=600
else
    TYPES="softmax hedgehog taylor elu performer cosformer t2r"; LRS="1.0e-4 4.642e-4 2.154e-3 1.0e-2"
    SET="data.num_workers=2"
    T_RUN=3600
fi
DIR=$LOGS/mqar_zoology
mqar_job() {  # mqar_job ATTENTION LR SEED
    job mqar_${1}_lr${2}_s$3 $T_RUN - "$PY run.py experiment=mqar_zoology attention=$1 regime.lr=$2 task_name=mqar_zoology hydra.run.dir=$DIR/${1}_lr${2}_s$3 $COMMON_NOSEED seed=$3 $SET"
}

if [ "$PHASE" = sweep ]; then
    for lr in $LRS; do
        for att in $TYPES; do mqar_job "$att" "$lr" 0; done
    done
elif [ "$PHASE" = seeds ]; then
    CHOSEN=$($PY - "$WORK" "$BATCH" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "experiments")
import collect
runs = collect.load_runs(Path(sys.argv[1]))
runs = runs[runs["batch"] == sys.argv[2]]
sweep, _ = collect.table_mqar_zoology(runs)
if sweep.empty:
    sys.exit("no complete sweep runs")
for _, row in sweep[sweep["chosen"]].iterrows():
    print(row["attention"], format(row["lr"], ".4g").replace("e-0", "e-"))
EOF
    ) || { say "FATAL: no learning rates chosen yet (run PHASE=sweep to completion first)"; finish; exit 1; }
    say "chosen on validation (seed 0): $(echo "$CHOSEN" | tr '\n' ' ')"
    while read -r att lr; do
        [ -z "$att" ] && continue
        for lr_name in $LRS; do   # the sweep's own spelling of that learning rate, so the folder names match
            [ "$(printf '%.4g' "$lr_name")" = "$(printf '%.4g' "$lr")" ] && lr=$lr_name
        done
        for seed in 1 2; do mqar_job "$att" "$lr" "$seed"; done
    done <<< "$CHOSEN"
else
    say "FATAL: PHASE must be sweep or seeds, got $PHASE"; finish; exit 1
fi

MIN_TIME=${MIN_TIME:-60} run_plan 30
finish
