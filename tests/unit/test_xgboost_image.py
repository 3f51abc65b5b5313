"""The built-in XGBoost image run by its entry point on a container layout, as the platform runs it."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from opensage.contract import Layout
from opensage.images.xgboost import metric_definitions
from opensage.images.xgboost.serve import PredictError, load_model, predict


def _data(rows: int = 600, seed: int = 0, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    score = x[:, 0] + 0.5 * x[:, 1]
    y = (score > 0).astype(int) if classes == 2 else np.digitize(score, [-0.5, 0.5])
    return x, y


def _csv(*columns: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack(columns), delimiter=",", fmt="%.6g")
    return buf.getvalue().encode()


def _run(
    tmp_path: Path, files: dict[str, dict[str, bytes]], hps: dict[str, str], content_type: str = "text/csv"
) -> tuple[subprocess.CompletedProcess[str], Layout]:
    layout = Layout(tmp_path / "ml")
    layout.create()
    for channel, channel_files in files.items():
        for name, body in channel_files.items():
            path = layout.channel_dir(channel) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    layout.hyperparameters_file.write_text(json.dumps(hps))
    layout.input_data_config_file.write_text(json.dumps({c: {"ContentType": content_type} for c in files}))
    layout.resource_config_file.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(layout.base)}
    result = subprocess.run(
        [sys.executable, "-m", "opensage.images.xgboost", "train"], env=env, capture_output=True, text=True, timeout=120
    )
    return result, layout


def test_csv_with_validation_and_early_stopping(tmp_path: Path) -> None:
    x, y = _data()
    result, layout = _run(
        tmp_path,
        {"train": {"a.csv": _csv(y[:400], x[:400])}, "validation": {"v.csv": _csv(y[400:], x[400:])}},
        {"objective": "binary:logistic", "num_round": "200", "early_stopping_rounds": "5", "eval_metric": "auc"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[0]\ttrain-auc:" in result.stdout and "\tvalidation-auc:" in result.stdout
    booster = load_model(layout.model_dir)
    assert booster.num_boosted_rounds() < 200  # stopped early
    body, content_type = predict(booster, _csv(x[400:]), "text/csv")
    scores = np.array([float(v) for v in body.decode().split(",")])
    assert content_type == "text/csv" and ((scores > 0.5) == y[400:]).mean() > 0.9


def test_metric_definitions_match_the_log_lines() -> None:
    import re

    line = "[3]#011train-logloss:0.25431#011validation-auc:0.98"
    found = {d["Name"]: re.match(d["Regex"], line) for d in metric_definitions()}
    assert found["train:logloss"] and found["train:logloss"].group(1) == "0.25431"
    assert found["validation:auc"] and found["validation:auc"].group(1) == "0.98"
    assert found["validation:logloss"] is None


def test_gzip_csv_with_weights(tmp_path: Path) -> None:
    x, y = _data()
    weights = np.ones(len(y))
    result, layout = _run(
        tmp_path,
        {"train": {"part.csv.gz": gzip.compress(_csv(y, weights, x))}},
        {"objective": "binary:logistic", "num_round": "5", "csv_weights": "1"},
    )
    assert result.returncode == 0, result.stdout
    assert load_model(layout.model_dir).num_features() == 4


def test_libsvm(tmp_path: Path) -> None:
    x, y = _data()
    lines = [f"{label} " + " ".join(f"{j}:{v:.5f}" for j, v in enumerate(row)) for label, row in zip(y, x, strict=True)]
    result, layout = _run(
        tmp_path,
        {"train": {"train.libsvm": "\n".join(lines).encode()}},
        {"objective": "binary:logistic", "num_round": "5"},
        content_type="text/libsvm",
    )
    assert result.returncode == 0, result.stdout
    assert load_model(layout.model_dir).num_boosted_rounds() == 5


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = _data()
    table = pa.table({"label": y.astype(float), **{f"f{i}": x[:, i] for i in range(4)}})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    result, layout = _run(
        tmp_path,
        {"train": {"train.parquet": buf.getvalue()}},
        {"objective": "binary:logistic", "num_round": "5"},
        content_type="application/x-parquet",
    )
    assert result.returncode == 0, result.stdout
    assert load_model(layout.model_dir).num_features() == 4


def test_multiclass_softprob_and_json_predictions(tmp_path: Path) -> None:
    x, y = _data(classes=3)
    result, layout = _run(
        tmp_path, {"train": {"t.csv": _csv(y, x)}}, {"objective": "multi:softprob", "num_class": "3", "num_round": "10"}
    )
    assert result.returncode == 0, result.stdout
    booster = load_model(layout.model_dir)
    body, content_type = predict(
        booster, json.dumps({"instances": x[:2].tolist()}).encode(), "application/json", "application/json"
    )
    predictions = json.loads(body)["predictions"]
    assert content_type == "application/json" and len(predictions) == 2 and len(predictions[0]["score"]) == 3
    with pytest.raises(PredictError, match="expects 4 features"):
        predict(booster, b"1,2,3", "text/csv")


@pytest.mark.parametrize(
    ("files", "hps", "message"),
    [
        ({"train": {"h.csv": b"label,a\n1,2\n"}}, {"num_round": "2"}, "h.csv line 1 looks like a header row"),
        ({"train": {"n.csv": b"1,2\n0,x\n"}}, {"num_round": "2"}, "n.csv line 2, column 2: 'x' is not a number"),
        ({"train": {"e.csv": b""}}, {"num_round": "2"}, "Channel 'train' has no data"),
        ({"validation": {"v.csv": b"1,2\n"}}, {"num_round": "2"}, "needs a 'train' channel"),
        ({"train": {"t.csv": b"1,2\n"}}, {}, "num_round is required"),
        (
            {"train": {"t.csv": b"1,2\n"}},
            {"num_round": "2", "max_depth": "-1"},
            "max_depth: value -1 is not in the range",
        ),
        ({"train": {"t.csv": b"1,2\n"}}, {"num_round": "2", "eta": "fast"}, "eta: value 'fast' is not a number"),
        ({"train": {"t.csv": b"1,2\n"}}, {"num_round": "2", "colour": "red"}, "colour is not a hyperparameter"),
        (
            {"train": {"t.csv": b"3,2\n"}},
            {"num_round": "2", "objective": "multi:softmax", "num_class": "2"},
            "label 3 is not an integer in [0, num_class)",
        ),
    ],
)
def test_bad_input_writes_a_failure_reason(tmp_path: Path, files: dict, hps: dict, message: str) -> None:
    result, layout = _run(tmp_path, files, hps)
    assert result.returncode == 1
    failure = layout.failure_file.read_text()
    assert failure.startswith("ClientError: ") and message in failure, failure
