"""Algorithm-mode training, as SageMaker's XGBoost container does it.

Reads the container contract (hyperparameters, channels, resource config), trains, prints the
evaluation lines (``[0]<TAB>train-logloss:...``), and writes ``<model_dir>/xgboost-model`` in
XGBoost's own format. With several hosts, ranks join through xgboost's collective with a tracker on
the first host; every host trains on the data in its own channel directories.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from opensage.contract import Layout
from opensage.images.xgboost import data, hyperparameters

log = logging.getLogger("opensage.xgboost")
MODEL_NAME = "xgboost-model"


class ClientError(Exception):
    """A mistake in the job's input: the message is what the person must fix."""


def _dmatrix(layout: Layout, channel: str, cfg: dict[str, Any], hps: dict[str, Any]):  # type: ignore[no-untyped-def]
    import xgboost as xgb

    directory = layout.channel_dir(channel)
    content_type = cfg.get("ContentType") or "text/csv"
    if data.kind_of(content_type) == "libsvm":
        matrix, files = data.read_libsvm(directory, channel)
        labels = matrix.get_label()
        log.info(
            "Loaded channel '%s': %d rows, %d features (libsvm, %d file(s))",
            channel,
            matrix.num_row(),
            matrix.num_col(),
            files,
        )
    else:
        table = data.read_table(directory, content_type, channel, bool(hps.get("csv_weights")))
        labels = table.labels
        matrix = xgb.DMatrix(table.features, label=table.labels, weight=table.weights, nthread=hps["nthread"])
        rows, cols = table.features.shape
        log.info(
            "Loaded channel '%s': %d rows, %d features from %d file(s) in %.2f s",
            channel,
            rows,
            cols,
            table.files,
            table.seconds,
        )
    _check_labels(labels, hps, channel)
    return matrix


def _check_labels(labels: np.ndarray, hps: dict[str, Any], channel: str) -> None:
    objective = hps["objective"]
    if objective.startswith("multi:"):
        n = hps["num_class"]
        bad = (labels < 0) | (labels >= n) | (labels != np.floor(labels))
        if bad.any():
            row = int(np.argmax(bad))
            raise ClientError(
                f"Channel '{channel}' row {row + 1}: label {labels[row]:g} is not an integer in "
                f"[0, num_class) with num_class={n}."
            )
    elif objective in ("binary:logistic", "binary:logitraw", "binary:hinge", "reg:logistic"):
        bad = (labels < 0) | (labels > 1)
        if bad.any():
            row = int(np.argmax(bad))
            raise ClientError(
                f"Channel '{channel}' row {row + 1}: label {labels[row]:g} is outside [0, 1], which "
                f"objective {objective} needs."
            )


def _collective_args(resource: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
    """Worker arguments for xgboost's collective (and the tracker, on the first host)."""
    hosts = resource.get("hosts") or ["algo-1"]
    if len(hosts) < 2:
        return None, None
    from xgboost.tracker import RabitTracker

    current = resource["current_host"]
    addresses = json.loads(os.environ.get("OPENSAGE_HOST_ADDRESSES") or "{}")
    master = addresses.get(hosts[0], "127.0.0.1")
    port = int(os.environ.get("OPENSAGE_TRACKER_PORT", "9099"))
    tracker = None
    if current == hosts[0]:
        tracker = RabitTracker(n_workers=len(hosts), host_ip=master, port=port, timeout=300)
        tracker.start()
    args = {
        "dmlc_tracker_uri": master,
        "dmlc_tracker_port": port,
        "dmlc_task_id": current,
        "dmlc_retry": 10,
        "dmlc_timeout": 300,
    }
    return args, tracker


def _train(layout: Layout, hps: dict[str, Any], channels: dict[str, Any], is_master: bool) -> None:
    import xgboost as xgb

    if "train" not in channels:
        raise ClientError(
            "The XGBoost algorithm needs a 'train' channel; the job has "
            f"{', '.join(sorted(channels)) or 'no channels'}."
        )
    dtrain = _dmatrix(layout, "train", channels["train"], hps)
    evals = [(dtrain, "train")]
    if "validation" in channels:
        evals.append((_dmatrix(layout, "validation", channels["validation"], hps), "validation"))
    early = hps.get("early_stopping_rounds")
    if early and len(evals) < 2:
        raise ClientError("early_stopping_rounds needs a 'validation' channel.")
    params = hyperparameters.booster_params(hps)
    started = time.monotonic()
    try:
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=hps["num_round"],
            evals=evals,
            early_stopping_rounds=early,
            verbose_eval=True,
        )
    except xgb.core.XGBoostError as exc:
        raise ClientError(f"XGBoost rejected the training data or parameters: {str(exc).splitlines()[0]}") from exc
    log.info("Trained %d round(s) in %.2f s", booster.num_boosted_rounds(), time.monotonic() - started)
    if is_master:
        layout.model_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # no file extension on purpose: the container's name is "xgboost-model"
            warnings.filterwarnings("ignore", message=".*UBJSON format as default.*")
            booster.save_model(str(layout.model_dir / MODEL_NAME))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s:%(levelname)s] %(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    layout = Layout.from_env()
    try:
        raw = json.loads(layout.hyperparameters_file.read_text()) if layout.hyperparameters_file.exists() else {}
        channels = (
            json.loads(layout.input_data_config_file.read_text()) if layout.input_data_config_file.exists() else {}
        )
        resource = json.loads(layout.resource_config_file.read_text()) if layout.resource_config_file.exists() else {}
        hps = hyperparameters.validate(raw)
        args, tracker = _collective_args(resource)
        is_master = resource.get("current_host", "algo-1") == (resource.get("hosts") or ["algo-1"])[0]
        if args is None:
            _train(layout, hps, channels, True)
        else:
            import xgboost as xgb

            with xgb.collective.CommunicatorContext(**args):
                _train(layout, hps, channels, is_master)
            if tracker is not None:
                tracker.wait_for(timeout=60)
    except (ClientError, data.DataError, hyperparameters.HyperparameterError) as exc:
        return _fail(layout, f"ClientError: {exc}")
    except Exception as exc:  # the container reports anything else as an algorithm error
        log.exception("training failed")
        return _fail(layout, f"AlgorithmError: {type(exc).__name__}: {exc}")
    return 0


def _fail(layout: Layout, message: str) -> int:
    log.error(message)
    layout.failure_file.parent.mkdir(parents=True, exist_ok=True)
    Path(layout.failure_file).write_text(message + "\n")
    return 1
