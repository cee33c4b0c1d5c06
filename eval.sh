#!/usr/bin/env bash
# Evaluate a checkpoint on the test split of a dataset: ours, or one of the reference implementation
# (its model kind is inferred from its keys).
#
#   bash eval.sh outputs/demo/checkpoints/best.ckpt                       # the demo's data (synthetic)
#   bash eval.sh REF.ckpt data=msd500 data.root=/path/to/msd500 ...      # any dataset and overrides
#
# Writes DIR/metrics/test.json and DIR/metrics/test_per_tag.csv, prints the results table.
set -euo pipefail
CKPT=${1:?usage: bash eval.sh CHECKPOINT [hydra overrides...]}
shift
python main.py mode=test ckpt_path="$CKPT" "$@"
