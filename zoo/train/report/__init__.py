"""A sweep's report from its JSON files, without torch: the sweep dir read back (``sweep``), paired
differences and their intervals (``paired``), comparison.md and the command (``comparison``), and
comparison.png (``plot``). ``python -m zoo.train.report <sweep dir>`` runs it."""
