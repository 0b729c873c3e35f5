#!/usr/bin/env bash
# A short real run of the default recipe on a lent GPU: prints epoch seconds, images/s and test accuracy.
#
# The GPU machine has torch but no Hydra and only this checkout (not ../shared), so first, here, once:
#     echo /.whl/ >> .git/info/exclude;  mkdir -p .whl  && cp ../shared/wheels/*.whl .whl/
#     echo /.data/ >> .git/info/exclude; mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/
# then the device call (carry both ignored folders):
#     run(command="bash scripts/gpu_check.sh", carry=[".whl", ".data"], timeout_s=540)
# Knobs (environment): EPOCHS (default 5), MODEL (metaformer), COMPILE (false), ZOO_CIFAR10 (the archive).
# Extra arguments go to train.py as Hydra overrides, e.g. `bash scripts/gpu_check.sh batch_size=512 lr=0.2`.
# Accuracies come from the JPEG (quality ~75) copy of CIFAR-10: expect about 1 point below published numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import hydra" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1
ARCHIVE="${ZOO_CIFAR10:-.data/cifar10-jpeg.tar.gz}"
RUN_DIR="${RUN_DIR:-/tmp/zoo-gpu-check/$(date +%H%M%S)}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

python3 train.py model="${MODEL:-metaformer}" drop_path_rate=0.1 data=cifar10_folder data.path="$ARCHIVE" \
    data.cache_dir=/tmp/zoo-cache epochs="${EPOCHS:-5}" sched.warmup_epochs=1 compile="${COMPILE:-false}" \
    hydra.run.dir="$RUN_DIR" "$@"

python3 - "$RUN_DIR" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
print(f"{'epoch':>5} {'seconds':>8} {'images/s':>9} {'train_acc':>9} {'test_acc':>8}")
for line in (run / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    print(f"{r['epoch']:>5} {r['epoch_seconds']:>8.2f} {r['images_per_second']:>9.0f} {r['train_acc']:>9.4f} {r['test_acc']:>8.4f}")
s = json.loads((run / "summary.json").read_text())
print(f"{s['model']} on {s['device_name']}: final test_acc {s['final_test_acc']:.4f}, best {s['best_test_acc']:.4f}, "
      f"{s['total_seconds']:.1f}s for {s['epochs']} epochs ({s['params'] / 1e6:.2f}M params)")
PY
if [ -n "${OUT:-}" ]; then cp "$RUN_DIR"/metrics.jsonl "$RUN_DIR"/summary.json "$OUT"/; fi

# The drop path forms and skip / mask training steps on the GPU (CUDA events): resnet110 at batch 128
# and 512, eager and compiled. Bounded, so the run above always leaves its results.
timeout 300 python3 benchmarks/drop_path.py --device cuda --repeats 20 --train-repeats 10 || echo "(drop path benchmark stopped early, see above)"
