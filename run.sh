#!/usr/bin/env bash
# The paper's experiment grid (Won et al., ICASSP 2021, Tables 1-2) on MSD100, as one Hydra sweep:
# samplers {random, balanced, balanced-weighted} x song branch {acoustic, cultural, concat}
# x word vectors {google, music}: 18 jobs per seed.
#
#   DATA=/path/to/msd500 bash run.sh                     # here, one job after the other, on one GPU
#   DATA=/path/to/msd500 TRAINER=ddp bash run.sh         # here, one job after the other, each on every GPU (DDP)
#   DATA=/path/to/msd500 LAUNCHER=slurm bash run.sh hydra.launcher.partition=gpu   # SLURM: all 18 jobs at once
#   DATA=/path/to/msd500 LAUNCHER=slurm TRAINER=ddp bash run.sh trainer.devices=8 trainer.num_nodes=4 ...
#   SEEDS=0,1,2 ...                                      # several seeds (mean and 95% CI in the comparison)
#
# The import runs first, once, in this shell (mode=prepare): the jobs then load it instead of waiting for the
# first of them to import. Extra Hydra overrides (after `bash run.sh`) go to both commands. Every job writes
# into $SWEEP_DIR/<job number>/ (metrics/test.json, checkpoints/, .hydra/); compare them with
#   python -m tagretrieval.reports.compare multirun/paper_msd100 --by sampler model data.word_vectors
# The grid's axes can be narrowed: SAMPLERS=random MODELS=cultural VECTORS=google; EXPERIMENT picks the
# experiment config (default paper).
set -euo pipefail
cd "$(dirname "$0")"
DATA=${DATA:?set DATA to the MSD500 folder (see README, "Reproduce the paper")}
TRAINER=${TRAINER:-gpu}
LAUNCHER=${LAUNCHER:-basic}      # basic: one job after the other here; slurm; local (submitit, on this machine)
SEEDS=${SEEDS:-0}
SAMPLERS=${SAMPLERS:-random,balanced,balanced_weighted}
MODELS=${MODELS:-acoustic,cultural,concat}
VECTORS=${VECTORS:-google,music}
EXPERIMENT=${EXPERIMENT:-paper}
SWEEP_DIR=${SWEEP_DIR:-multirun/paper_msd100}

dataset=(data=msd500 data.root="$DATA" data.split=msd100 tag_encoder=prepared hydra/launcher="$LAUNCHER")
python main.py mode=prepare "${dataset[@]}" hydra.run.dir="$SWEEP_DIR/prepare" "$@"
python main.py --multirun experiment="$EXPERIMENT" "${dataset[@]}" trainer="$TRAINER" \
  sampler="$SAMPLERS" model="$MODELS" data.word_vectors="$VECTORS" seed="$SEEDS" \
  hydra.sweep.dir="$SWEEP_DIR" "$@"
