"""The training data on the device: CIFAR-10 as uint8 tensors (``cifar10``), the epoch's batches
(``batches``: order, crop, flip), ``data.augment``'s policies (``augment``) and mixup / cutmix (``mixing``)."""
