#!/usr/bin/env bash
# One GPU run of the project, in 8 minutes at most: the machine, `pytest -m "cuda and not slow"`, an
# eager throughput table (resnet20 / 56 / 110 and metaformer, batch 128 and 512, mask and skip),
# resnet110 compiled at batch 512 in mask and in skip mode (the claim that skip saves compute), and a
# with / without stochastic depth comparison on the full CIFAR-10 (resnet20, 3 paired seeds, 6 runs at
# once, as many epochs as the measured rate fits).
#
# Budget, seconds (scripts/gpu_check.py's REAL plan; each stage stops at its own, the whole at the
# timeout below; the comparison gets what the others leave):
#     set-up: imports, machine, decoding CIFAR-10 once      35
#     CUDA tests                                            70
#     throughput table, eager (16 rows)                     75
#     resnet110 compiled (inductor), mask vs skip, 512     140
#     with / without comparison, 6 runs at once            145
#     margin: stopping the runs, the reports                15
#     total                                                480
#
# On a machine with a GPU, torch and torchvision but no Hydra and no package index: from this checkout,
# with ../shared beside it, copy the Hydra wheels and the data set into ignored folders once,
#     echo /.whl/ >> .git/info/exclude;  mkdir -p .whl  && cp ../shared/wheels/*.whl .whl/
#     echo /.data/ >> .git/info/exclude; mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/
# (where only the checkout reaches the GPU machine, those two folders go with it), then run
#     bash scripts/gpu_check.sh
# It installs the wheels into /tmp/site when Python lacks Hydra. Results land in $OUT (else --out,
# else ./gpu_check_out): gpu_check.md, gpu_check.json, cuda_tests.txt, comparison.md, comparison.png,
# written after every stage, so a run stopped from outside keeps what it measured.
# CPU dry run (CI runs it, tests/test_gpu_check.py):  bash scripts/gpu_check.sh --dry --out <dir>
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import hydra" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1
exec timeout 480 python3 scripts/gpu_check.py "$@"
