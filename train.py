"""Train a zoo model on CIFAR-10.

    python train.py model=resnet20 drop_path_rate=0.1 data=cifar10_folder data.path=<dir or .tar.gz>
    python train.py experiment=cpu_smoke data=cifar10_folder data.path=...      # < 1 minute on a CPU
    python train.py resume=outputs/2026-11-26/10-00-00_resnet20                 # continue that run
    python train.py -m drop_path_rate=0,0.1 seed=0,1,2 ...                       # a sweep, with its report
    torchrun --nproc_per_node=2 train.py ...                                     # DistributedDataParallel

Everything a run produces lands in its Hydra output dir: config.yaml, metrics.jsonl (one line per
epoch), summary.json and last.pt. The loop is ``zoo.train.loop.run.train``; this file only hands it the
config Hydra composed from configs/.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from zoo.train.cli import check_argv, run
from zoo.train.rundir.placement import reserve_run_dir

CONFIGS = Path(__file__).resolve().parent / "configs"


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)  # a module-level function of an importable package: launcher plugins can pickle this task


if __name__ == "__main__":
    check_argv(sys.argv, CONFIGS)
    reserve_run_dir(sys.argv)
    main()
