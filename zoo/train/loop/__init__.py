"""The run itself: set up or resume, the epochs, evaluation and checkpoints (``run``); one training
step and one evaluation pass (``step``); what a step needs: the optimizer and lr (``optim``), the weights'
moving average (``ema``), bf16 / channels_last (``precision``), torchrun (``distributed``) and the
progress bar (``progress``)."""
