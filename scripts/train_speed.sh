#!/bin/bash
# train.py's images/s with the old CPU default (fp32, NCHW: amp=false channels_last=false) against
# today's (amp=auto channels_last=auto), in ABBA order so a slow phase of a shared machine hits both.
# One epoch of 2,560 training images (20 steps of 128) per run; its images/s includes the first steps.
# MODELS picks the models (default: both), e.g. MODELS=metaformer for the MetaFormer alone.
#   ZOO_CIFAR10=../shared/data/cifar10-jpeg.tar.gz bash scripts/train_speed.sh [out dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/train_speed}
: "${ZOO_CIFAR10:?set ZOO_CIFAR10 to the CIFAR-10 image folder or .tar.gz}"
mkdir -p "$out"
for model in "resnet56 optim=sgd lr=0.1" "metaformer"; do
  name=${model%% *}
  case " ${MODELS:-resnet56 metaformer} " in *" $name "*) ;; *) continue ;; esac
  for cfg in old new new old; do
    if [ "$cfg" = old ]; then flags="amp=false channels_last=false"; else flags="amp=auto channels_last=auto"; fi
    dir=$out/${name}_${cfg}_$(date +%H%M%S%N)
    # shellcheck disable=SC2086  # $model and $flags are lists of overrides
    python train.py model=$model $flags data=cifar10_folder data.subset=2560 data.test_subset=100 epochs=1 \
      sched.warmup_epochs=0 log_every_s=0 hydra.run.dir="$dir" > "$dir.log" 2>&1
    python -c "import json, sys; s = json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], round(s['images_per_second'], 1), 'amp', s['amp'], 'channels_last', s['channels_last'])" \
      "$dir/summary.json" "$name" "$cfg"
  done
done
