"""What a run leaves in its dir: training checkpoints and the config a resumed run continues with
(``checkpoint``), files written whole (``atomic``), config.yaml / metrics.jsonl / summary.json and the
dir's lock (``runlog``), the ``logger=`` backends (``loggers``), where the run dir is and the checks that
it is free and writable (``placement``), and a stop at a step boundary on SIGTERM / Ctrl-C (``interrupt``)."""
