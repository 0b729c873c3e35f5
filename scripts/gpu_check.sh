#!/usr/bin/env bash
# One prepared GPU run: the machine, `pytest -m cuda`, a throughput table (resnet20 / 56 / 110 and
# metaformer, batch 128 and 512, eager and compiled, mask and skip) and a with / without stochastic
# depth comparison on the full CIFAR-10 (resnet20, 3 paired seeds, as many epochs as fit), all under
# 9 minutes, each stage inside its own budget (scripts/gpu_check.py says which).
#
# On a lent GPU (the device tool; the machine has torch but no Hydra, and only this checkout), first,
# here, once:
#     echo /.whl/ >> .git/info/exclude;  mkdir -p .whl  && cp ../shared/wheels/*.whl .whl/
#     echo /.data/ >> .git/info/exclude; mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/
# then the device call (carry both ignored folders; the script stops itself within 9 minutes):
#     run(command="bash scripts/gpu_check.sh", carry=[".whl", ".data"], timeout_s=590)
# Results come back from $OUT: gpu_check.md, gpu_check.json, cuda_tests.txt, comparison.md, .png.
# CPU dry run (CI runs it, tests/test_gpu_check.py):  bash scripts/gpu_check.sh --dry --out <dir>
set -euo pipefail
cd "$(dirname "$0")/.."

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import hydra" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1
exec timeout 570 python3 scripts/gpu_check.py "$@"
