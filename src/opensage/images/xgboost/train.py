"""Algorithm-mode training, as SageMaker's XGBoost container does it (``algorithm_mode/train.py``).

Reads the container contract under ``SAGEMAKER_BASE_DIR`` (hyperparameters, channels, resource and
checkpoint configuration), validates the hyperparameters and data, trains with the evaluation lines
on stdout (``[0]<TAB>train-logloss:0.54321<TAB>validation-logloss:0.56780``), and writes
``<model_dir>/xgboost-model``. A job fails with exit code 1 and a reason in ``output/failure``:
``ClientError: ...`` for a mistake in the job's input, ``AlgorithmError: ...`` otherwise.

The model is saved in XGBoost's UBJSON format, as the 3.0-5 container saves it. The 1.3-1 to 1.7-1
containers wrote XGBoost's old binary format, which XGBoost 3 can no longer write; XGBoost reads
UBJSON from 1.6 on, so for a job that names a container before 1.6-1 (``OPENSAGE_IMAGE_TAG``) the
model is saved as JSON, which XGBoost reads from 1.0 on. OpenSage's server reads every format.

XGBoost's ``nthread`` defaults to the instance type's vCPUs (``SM_NUM_CPUS``) as in the container,
but never more than the cores this process can really use (affinity, cgroup quota, the platform's
share; :mod:`opensage.compute.cores`): more threads than cores slow ``exact`` down many times. A
job's own ``nthread`` is used as given.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opensage.compute import cores
from opensage.contract import (
    CHANNEL_CONTENT_TYPE,
    CHECKPOINT_LOCAL_PATH,
    IMAGE_TAG_ENV,
    NUM_CPUS_ENV,
    NUM_GPUS_ENV,
    RESOURCE_CURRENT_HOST,
    RESOURCE_HOSTS,
    Layout,
)
from opensage.images.xgboost import data, distributed, hyperparameters
from opensage.images.xgboost.data import Channel
from opensage.images.xgboost.errors import ClientError

log = logging.getLogger(__name__)
MODEL_NAME = "xgboost-model"
TRAIN, VALIDATION = "train", "validation"
KNOWN_CHANNELS = (TRAIN, VALIDATION, "code")
_LOGISTIC = ("binary:logistic", "binary:logitraw", "reg:logistic")


@dataclass(frozen=True, slots=True)
class Job:
    """What the container contract says about this training job, on this host."""

    hyperparameters: dict[str, Any]
    channels: dict[str, dict[str, Any]]
    hosts: list[str]
    current_host: str
    checkpoint_dir: Path | None
    num_cpus: int
    num_gpus: int
    image_tag: str
    usable_cores: int = 0  # what this process can really use (0: unknown, the instance's figure applies)

    @property
    def is_master(self) -> bool:
        return self.current_host == self.hosts[0]

    def nthread(self, hps: Mapping[str, Any]) -> int:
        """XGBoost's threads: the job's ``nthread``, else the instance's vCPUs up to the cores it can use."""
        given = hps.get("nthread")
        return int(given) if given else cores.thread_cap(self.num_cpus, self.usable_cores or self.num_cpus)


def _read_json(path: Path) -> Any:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ClientError(f"{path.name} is not valid JSON: {exc}") from exc


def read_job(layout: Layout, env: Mapping[str, str]) -> Job:
    """The job's configuration from ``input/config`` and the environment."""
    resource = _read_json(layout.resource_config_file)
    hosts = list(resource.get(RESOURCE_HOSTS) or ["algo-1"])
    checkpoint = _read_json(layout.checkpoint_config_file) if layout.checkpoint_config_file.exists() else None
    checkpoint_dir = None
    if checkpoint is not None:
        checkpoint_dir = Path(checkpoint.get(CHECKPOINT_LOCAL_PATH) or layout.checkpoints_dir)
    return Job(
        hyperparameters=_read_json(layout.hyperparameters_file),
        channels=_read_json(layout.input_data_config_file),
        hosts=hosts,
        current_host=str(resource.get(RESOURCE_CURRENT_HOST) or hosts[0]),
        checkpoint_dir=checkpoint_dir,
        num_cpus=int(env.get(NUM_CPUS_ENV) or len(os.sched_getaffinity(0))),
        num_gpus=int(env.get(NUM_GPUS_ENV) or 0),
        image_tag=env.get(IMAGE_TAG_ENV, ""),
        usable_cores=cores.usable_cores(),
    )


def main() -> int:
    """Train by the container contract; returns the process exit code."""
    _configure_logging()
    layout = Layout.from_env()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run(layout, os.environ)
    except (ClientError, hyperparameters.HyperparameterError, data.DataError) as exc:
        return _fail(layout, f"ClientError: {exc}")
    except Exception as exc:  # the container reports anything else as the algorithm's error
        log.exception("Training failed")
        return _fail(layout, f"AlgorithmError: {_describe(exc)}")
    layout.success_file.parent.mkdir(parents=True, exist_ok=True)
    layout.success_file.write_text("")
    log.info("Reporting training SUCCESS")
    return 0


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="[%(asctime)s:%(levelname)s] %(message)s",
        datefmt="%Y-%m-%d:%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    logging.captureWarnings(True)  # XGBoost's warnings in the same log, in order


def _on_sigterm(signum: int, frame: Any) -> None:
    log.info("SIGTERM received: stopping training")
    raise SystemExit(143)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _fail(layout: Layout, message: str) -> int:
    log.error("Reporting training FAILURE: %s", message)
    layout.failure_file.parent.mkdir(parents=True, exist_ok=True)
    layout.failure_file.write_text(message + "\n")
    return 1


# --- the job ---------------------------------------------------------------------------------------


def run(layout: Layout, env: Mapping[str, str]) -> None:
    """Validate, load, train and save, on one host or as one host of several."""
    job = read_job(layout, env)
    hps = hyperparameters.validate(job.hyperparameters)
    _check_unsupported(hps)
    kind = _check_channels(job.channels)
    cluster = distributed.cluster_from(job.hosts, job.current_host, env)
    if cluster is None:
        log.info("Single node training.")
        _train_host(layout, job, hps, kind, distributed_run=False)
        return
    log.info("Distributed node training with %d hosts: %s", len(job.hosts), job.hosts)
    with distributed.collective(cluster):
        _train_host(layout, job, hps, kind, distributed_run=True)


def _check_unsupported(hps: Mapping[str, Any]) -> None:
    if "_kfold" in hps:
        raise ClientError("Cross-validation (_kfold) is not supported by OpenSage's XGBoost image yet.")
    if hps.get("use_dask_gpu_training") == "true":
        log.warning("use_dask_gpu_training=true: OpenSage has no Dask GPU training; training without Dask")
    removed = hyperparameters.removed_settings(hps)
    if removed:
        log.warning("Hyperparameters removed in XGBoost 2 have no effect and are ignored: %s", ", ".join(removed))


def _check_channels(channels: Mapping[str, Any]) -> str:
    """The data kind of the job (the train channel's content type, as the container uses it for both)."""
    for name in channels:
        if name not in KNOWN_CHANNELS:
            raise ClientError(
                f"Extraneous channel found: {name}. The XGBoost algorithm reads the channels 'train' (required) "
                "and 'validation'."
            )
    if TRAIN not in channels:
        raise ClientError("Missing required channel: train. The XGBoost algorithm needs a 'train' channel.")
    return data.content_kind(channels[TRAIN].get(CHANNEL_CONTENT_TYPE) or None)


def _train_host(layout: Layout, job: Job, hps: dict[str, Any], kind: str, *, distributed_run: bool) -> None:
    # XGBoost is imported only now, after the checks that need no data: a bad job fails in a blink.
    from opensage.images.xgboost import boosting

    dtrain = _channel(layout, job, hps, TRAIN, kind, distributed_run)
    dval = _channel(layout, job, hps, VALIDATION, kind, distributed_run) if VALIDATION in job.channels else None
    _log_matrices(dtrain, dval)
    threads = job.nthread(hps)
    if not hps.get("nthread") and threads < job.num_cpus:
        log.info("Training with %d threads: %d usable cores for %d vCPUs", threads, job.usable_cores, job.num_cpus)
    setup = boosting.Setup(
        nthread=threads,
        is_master=job.is_master,
        hosts=len(job.hosts),
        has_gpu=job.num_gpus > 0,
        image_tag=job.image_tag,
        checkpoint_dir=job.checkpoint_dir,
        model_path=layout.model_dir / MODEL_NAME,
    )
    booster = boosting.boost(hps, dtrain, dval, setup)
    if job.is_master:
        fmt = boosting.model_format(job.image_tag)
        boosting.save_model(booster, setup.model_path, fmt)
        log.info("Stored trained model at %s (%s)", setup.model_path, "UBJSON" if fmt == "ubj" else "JSON")


def _channel(layout: Layout, job: Job, hps: Mapping[str, Any], name: str, kind: str, distributed_run: bool) -> Any:
    """A channel's DMatrix, its labels checked; an empty one for a data-less host of a multi-host job."""
    directory = layout.channel_dir(name)
    log.info("File path %s of input files", directory)
    csv_weights = hps.get("csv_weights") == 1
    loaded = data.load(directory, name, kind, csv_weights=csv_weights, nthread=job.nthread(hps))
    if loaded is None:
        if not distributed_run:
            shown = directory.relative_to(layout.base) if directory.is_relative_to(layout.base) else directory
            raise ClientError(
                f"No data in {name if name == VALIDATION else 'training'} channel path {shown}: the '{name}' "
                "channel has no non-empty file."
            )
        log.warning(
            "Host %s does not have %s data; it joins the cluster with no rows. Divide the data across "
            "instances (S3DataDistributionType ShardedByS3Key) so that every host has some.",
            job.current_host,
            name,
        )
        from opensage.images.xgboost import boosting

        return boosting.empty_matrix()
    check_labels(loaded, hps)
    return loaded.dmatrix


def _log_matrices(dtrain: Any, dval: Any) -> None:
    log.info("Train matrix has %d rows and %d columns", dtrain.num_row(), dtrain.num_col())
    if dval is not None:
        log.info("Validation matrix has %d rows", dval.num_row())


def check_labels(loaded: Channel, hps: Mapping[str, Any]) -> None:
    """Labels the objective cannot use fail with the file and line of the first bad one.

    Raises:
        ClientError: naming the file, line, label and the rule it breaks.
    """
    objective = hps.get("objective", "reg:squarederror")
    labels = loaded.labels
    if objective.startswith("multi:"):
        n = int(hps["num_class"])
        bad = (labels < 0) | (labels >= n) | (labels != np.floor(labels))
        rule = f"is not an integer in [0, num_class) with num_class={n} (label must be in [0, num_class))"
    elif objective in _LOGISTIC:
        bad = (labels < 0) | (labels > 1)
        rule = f"is outside [0, 1], which objective {objective} needs (label must be in [0,1] for logistic regression)"
    elif objective in ("count:poisson", "reg:tweedie"):
        bad = labels < 0
        rule = f"is negative; objective {objective} needs labels >= 0 (label must be nonnegative)"
    elif objective == "reg:gamma":
        bad = labels <= 0
        rule = "is not positive; objective reg:gamma needs labels > 0"
    else:
        return
    if bad.any():
        row = int(np.argmax(bad))
        raise ClientError(f"{loaded.locate(row)}: label {labels[row]:g} {rule}.")
