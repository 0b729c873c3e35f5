"""The CIFAR-10 trainer: data on the device, the training loop, checkpoints, sweeps and their report.

Needs the ``train`` extra (Hydra, tqdm, matplotlib, torchvision): ``pip install "zoo[train]"``.
``train.py`` at the repository root is its command line; ``python -m zoo.train.report <sweep dir>``
rebuilds a sweep's report; ``python -m zoo.train.evaluate <run dir>`` evaluates a trained run.
"""
