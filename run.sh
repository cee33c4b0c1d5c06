#!/usr/bin/env bash
# The paper's experiment grid (Won et al., ICASSP 2021, Tables 1-2) on MSD100, as Hydra multiruns:
# samplers {random, balanced, balanced-weighted} x song branch {acoustic, cultural, concat}
# x word vectors {google, music}.
#
#   DATA=/path/to/msd500 bash run.sh              # one GPU
#   DATA=/path/to/msd500 TRAINER=ddp bash run.sh  # all GPUs of the node (DDP)
#   SEEDS=0,1,2 ...                               # several seeds (mean and 95% CI in the report)
#
# Extra Hydra overrides are passed through: `bash run.sh trainer.devices=4`.
set -euo pipefail
DATA=${DATA:?set DATA to the MSD500 folder (see README, "Reproduce the paper")}
TRAINER=${TRAINER:-gpu}
SEEDS=${SEEDS:-0}

for vectors in google music; do
  python main.py --multirun \
    experiment=paper data=msd500 data.root="$DATA" data.split=msd100 data.word_vectors="$vectors" \
    tag_encoder=prepared trainer="$TRAINER" \
    sampler=random,balanced,balanced_weighted model=acoustic,cultural,concat seed="$SEEDS" \
    hydra.sweep.dir="multirun/paper_msd100_${vectors}" "$@"
done
