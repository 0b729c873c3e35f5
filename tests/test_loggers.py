"""logger=csv | tensorboard | wandb | mlflow, several at once: each gets the config, every epoch's metrics,
the summary and the checkpoint paths, read back through its own backend; a resumed run continues the
tracker's run it started."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest

from conftest import check_cli, compose_train, rows, tiny, train_cut_and_resumed
from zoo.train.rundir import loggers


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (LevelDB's log format: 32 KiB blocks of records,
    each a 7-byte header of checksum, length and type; a 7-byte W&B header first)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records, chunk, pos = path.read_bytes(), [], b"", 7
    while pos + 7 <= len(data):
        if (pos % 32768) > 32768 - 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, or the last piece of a record
            record = pb.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def items(records: list, kind: str) -> list[dict]:
    """Each W&B record of ``kind`` (history, config, summary) as a dict of its keys' values."""
    out = []
    for record in records:
        node = getattr(record, kind) if record.HasField(kind) else None
        if kind == "config" and record.HasField("run"):  # the run's first record carries its config
            node = record.run.config
        if node is not None:
            pairs = node.item if kind == "history" else node.update
            out.append({p.key or "/".join(p.nested_key): json.loads(p.value_json) for p in pairs})
    return out


@pytest.mark.slow
def test_every_logger_gets_config_metrics_summary_and_checkpoints_and_a_resume_continues_its_run(
    tmp_path, monkeypatch, cifar10_archive, cifar10_cache
):
    for package in ("tensorboard", "wandb", "mlflow"):
        pytest.importorskip(package)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    overrides = tiny(cifar10_archive, cifar10_cache, "data.val_size=50", "logger=[csv,tensorboard,wandb,mlflow]")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")
    status = lambda: client.get_run(json.loads((run_dir / loggers.IDS_NAME).read_text())["mlflow"]).info.status  # noqa: E731
    statuses = []
    train_cut_and_resumed(monkeypatch, overrides, run_dir, between=lambda: statuses.append(status()))  # cut in epoch 2
    assert statuses == ["KILLED"]  # the trainer said how its run ended; the resume set it RUNNING, then FINISHED
    written = rows(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r["epoch"] for r in written] == [1, 2]

    with open(run_dir / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(r["test_acc"]) for r in table] == pytest.approx([r["test_acc"] for r in written])
    assert [int(r["epoch"]) for r in table] == [1, 2] and "val_acc" in table[0]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("val_acc")] == [1, 2]
    assert [e.value for e in events.Scalars("val_acc")] == pytest.approx([r["val_acc"] for r in written])

    ids = json.loads((run_dir / loggers.IDS_NAME).read_text())
    (run,) = client.search_runs([client.get_experiment_by_name("zoo").experiment_id])  # one run, not one per start
    assert run.info.run_id == ids["mlflow"] and run.info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_acc"))
    assert [step for step, _ in history] == [1, 2]
    assert [value for _, value in history] == pytest.approx([r["test_acc"] for r in written])
    assert run.data.params["model.name"] == "resnet8" and run.data.params["data.val_size"] == "50"
    assert run.data.metrics["summary.final_test_acc"] == pytest.approx(summary["final_test_acc"])
    assert run.data.tags["last_checkpoint"] == str((run_dir / "last.pt").resolve())
    assert run.data.tags["best_checkpoint"] == str((run_dir / "best.pt").resolve())
    saved = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))).read_text())
    assert saved == summary and list((run_dir / "mlartifacts").rglob("summary.json"))  # in the run dir, not the cwd

    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and {f.name for f in files} == {f"run-{ids['wandb']}.wandb"}  # two starts, one run id
    first, resumed = (wandb_records(f) for f in files)  # offline-run-<start time>-<id>: in order
    assert [r.exit.exit_code for r in first if r.HasField("exit")] == [1]
    assert any(r.HasField("preempting") for r in first) and not any(r.HasField("preempting") for r in resumed)
    assert [r.exit.exit_code for r in resumed if r.HasField("exit")] == [0]
    records = first + resumed
    logged = {(step["_step"], step["test_acc"]) for step in items(records, "history")}
    assert sorted(logged) == [(1, written[0]["test_acc"]), (2, written[1]["test_acc"])]
    (config, *_) = items(records, "config")
    assert config["model"] == {"name": "resnet8"} and config["data"]["val_size"] == 50
    final = {k: v for update in items(records, "summary") for k, v in update.items()}
    assert final["final_test_acc"] == pytest.approx(summary["final_test_acc"])
    assert final["last_checkpoint"] == str((run_dir / "last.pt").resolve())


@pytest.mark.parametrize("name", ["wandb", "mlflow", "tensorboard"])
def test_a_missing_logger_package_is_one_line_naming_its_extra(name, monkeypatch):
    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda pkg, *a: None if pkg == name else real(pkg, *a))
    assert check_cli("model=resnet8", f"logger=[csv,{name}]") == (
        f"error: logger={name} needs the {name} package: pip install 'zoo[{name}]'"
    )


def test_the_old_tensorboard_key_is_refused_with_the_new_spelling():
    assert check_cli("model=resnet8", "tensorboard=true") == (
        "error: tensorboard was removed: TensorBoard is a logger now: logger=tensorboard "
        "(or a list, logger=[csv,tensorboard])"
    )


def test_bad_logger_choices_and_options():
    assert check_cli("model=resnet8", "logger=comet") == (
        "error: logger=comet: there is no logger 'comet' (choices: csv, mlflow, tensorboard, wandb)"
    )
    assert check_cli("model=resnet8", "logger=wandb", "logger.wandb.mode=cloud") == (
        "error: logger.wandb.mode must be one of online, offline, disabled, got 'cloud'"
    )
    assert compose_train("model=resnet8").logger is None


def test_csv_gains_a_column_that_first_appears_in_a_later_epoch(tmp_path):
    """With test_every, the test split's keys first appear in a later epoch: the CSV gets the column."""
    logger = loggers.CSVLogger(tmp_path, {}, {}, [{"epoch": 1, "train_acc": 0.5}], None)
    logger.metrics({"epoch": 2, "train_acc": 0.6})
    logger.metrics({"epoch": 3, "train_acc": 0.7, "test_acc": 0.3})
    logger.metrics({"epoch": 4, "train_acc": 0.8})
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["test_acc"] for r in rows] == ["", "", "0.3", ""]


def test_mlflow_records_how_a_run_ended(tmp_path):
    """A run that stops without its summary is FAILED in MLflow; one interrupted (a resume continues it) is
    KILLED; a finished one FINISHED (the end-to-end test above). The second start reopens the same run."""
    from mlflow import MlflowClient

    from zoo.train.rundir.runlog import RunLog

    cfg = compose_train("model=resnet8", "logger=mlflow")
    client = MlflowClient(f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    statuses, ids = [], []
    for interrupted in (False, True):
        run = RunLog(tmp_path)
        run.open_loggers(cfg, [])
        if interrupted:
            run.outcome = "interrupted"
        run.close()
        ids.append(json.loads((tmp_path / loggers.IDS_NAME).read_text())["mlflow"])
        statuses.append(client.get_run(ids[-1]).info.status)
    assert statuses == ["FAILED", "KILLED"]
    experiment = client.get_run(ids[0]).info.experiment_id
    assert ids[0] == ids[1] and [r.info.run_id for r in client.search_runs([experiment])] == ids[:1]


@pytest.mark.slow
def test_overwrite_gives_the_new_run_trackers_of_its_own(tmp_path, cifar10_archive, cifar10_cache):
    """overwrite=true replaces a run's records: the new run's TensorBoard scalars are its own, the replaced
    run's metrics.csv is gone, and MLflow gets a new run (the replaced one stays in the store)."""
    for package in ("tensorboard", "mlflow"):
        pytest.importorskip(package)
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zoo.train.loop.run import train

    run_dir = tmp_path / "run"
    for seed, chosen in ((0, "[csv,tensorboard,mlflow]"), (1, "[tensorboard,mlflow]")):
        extra = ("epochs=1", f"seed={seed}", f"logger={chosen}", "overwrite=true")
        train(compose_train(*tiny(cifar10_archive, cifar10_cache, *extra)), run_dir)
    assert not (run_dir / "metrics.csv").exists()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("test_acc")] == [1]
    client = MlflowClient(f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("zoo").experiment_id])
    new = json.loads((run_dir / loggers.IDS_NAME).read_text())["mlflow"]
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1"]
    assert next(r for r in runs if r.info.run_id == new).data.params["seed"] == "1"
