"""The built-in XGBoost image: its entry point run as the platform runs it, and its serving helpers.

Training jobs run as ``python -m opensage.images.xgboost train`` on a layout under ``tmp_path``
(``SAGEMAKER_BASE_DIR``). The jobs of a module run concurrently (they are separate processes), so the
suite stays fast.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import socket
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import opensage
from opensage.contract import HOST_ADDRESSES_ENV, TRACKER_PORT_ENV, Layout
from opensage.images.xgboost import hyperparameters, metric_definitions
from opensage.images.xgboost.serve import PredictError, load_model, load_model_bytes, predict

SRC = str(Path(opensage.__file__).resolve().parents[1])  # the subprocesses run the code under test


def _data(rows: int = 600, seed: int = 0, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    score = x[:, 0] + 0.5 * x[:, 1]
    y = (score > 0).astype(int) if classes == 2 else np.digitize(score, [-0.5, 0.5])
    return x, y


def _csv(*columns: np.ndarray) -> bytes:
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack(columns), delimiter=",", fmt="%.17g")
    return buf.getvalue().encode()


def _libsvm(y: np.ndarray, x: np.ndarray) -> bytes:
    lines = [
        f"{label} " + " ".join(f"{j}:{float(v)!r}" for j, v in enumerate(row)) for label, row in zip(y, x, strict=True)
    ]
    return ("\n".join(lines) + "\n").encode()


def _parquet(y: np.ndarray, x: np.ndarray) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"label": y.astype(float), **{f"f{i}": x[:, i] for i in range(x.shape[1])}}), buf)
    return buf.getvalue()


@dataclass
class Job:
    """A training job's inputs; ``run`` lays them out and runs the entry point."""

    files: dict[str, dict[str, bytes]]
    hps: dict[str, str]
    content_type: str | None = "text/csv"
    hosts: tuple[str, ...] = ("algo-1",)
    env: dict[str, str] = field(default_factory=dict)
    checkpoints: bool = False

    def layout(self, root: Path, host: str = "algo-1") -> Layout:
        layout = Layout(root / host)
        layout.create()
        for channel, channel_files in self.files.items():
            for name, body in channel_files.items():
                path = layout.channel_dir(channel) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)
        config = {c: {"ContentType": self.content_type} if self.content_type else {} for c in self.files}
        layout.hyperparameters_file.write_text(json.dumps(self.hps))
        layout.input_data_config_file.write_text(json.dumps(config))
        layout.resource_config_file.write_text(json.dumps({"current_host": host, "hosts": list(self.hosts)}))
        if self.checkpoints:
            layout.checkpoint_config_file.write_text(json.dumps({"LocalPath": str(layout.checkpoints_dir)}))
        return layout


@dataclass
class Result:
    returncode: int
    output: str
    layout: Layout

    @property
    def failure(self) -> str:
        return self.layout.failure_file.read_text() if self.layout.failure_file.exists() else ""

    def booster(self) -> Any:
        import xgboost as xgb

        return xgb.Booster(model_file=bytearray((self.layout.model_dir / "xgboost-model").read_bytes()))


def _env(layout: Layout, extra: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "SAGEMAKER_BASE_DIR": str(layout.base), "PYTHONPATH": path, "SM_NUM_CPUS": "1", **extra}


def _run(layout: Layout, extra: dict[str, str] | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "opensage.images.xgboost", "train"],
        env=_env(layout, extra or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout + proc.stderr, layout)


def run_jobs(root: Path, jobs: dict[str, Job]) -> dict[str, Result]:
    """Run single-host jobs concurrently, each in ``root/<name>``."""
    layouts = {name: job.layout(root / name) for name, job in jobs.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_run, layouts[name], jobs[name].env) for name in jobs}
        return {name: future.result() for name, future in futures.items()}


# --- training jobs that succeed -------------------------------------------------------------------

X, Y = _data()
XM, YM = _data(classes=3)


def _good_jobs() -> dict[str, Job]:
    flipped = Y.copy()
    noisy = np.arange(len(Y)) % 3 == 0
    flipped[noisy] = 1 - flipped[noisy]
    return {
        "early_stopping": Job(
            {"train": {"a.csv": _csv(Y[:400], X[:400])}, "validation": {"v.csv": _csv(Y[400:], X[400:])}},
            {"objective": "binary:logistic", "num_round": "200", "early_stopping_rounds": "5", "eval_metric": "auc"},
        ),
        "libsvm": Job(
            {
                "train": {
                    "part-1.libsvm": _libsvm(Y[:300], X[:300]),
                    "sub/part-2.libsvm.gz": gzip.compress(_libsvm(Y[300:], X[300:])),
                }
            },
            {"objective": "binary:logistic", "num_round": "5", "eval_metric": "error,accuracy"},
            content_type=None,  # the container's default content type is libsvm
        ),
        "parquet": Job(
            {"train": {"train.parquet": _parquet(Y, X)}},
            {"objective": "binary:logistic", "num_round": "5"},
            content_type="application/x-parquet",
        ),
        "csv_weights": Job(
            # a third of the labels are wrong but weigh nothing: the model learns the true rule
            {"train": {"part.csv.gz": gzip.compress(_csv(flipped, (~noisy).astype(float), X))}},
            {"objective": "binary:logistic", "num_round": "20", "csv_weights": "1", "learning_rate": "0.3"},
        ),
        "softprob": Job(
            {"train": {"t.csv": _csv(YM, XM)}},
            {"objective": "multi:softprob", "num_class": "3", "num_round": "10", "eval_metric": "mlogloss,merror"},
        ),
        "checkpoints": Job(
            {"train": {"t.csv": _csv(Y, X)}}, {"objective": "binary:logistic", "num_round": "8"}, checkpoints=True
        ),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    results = run_jobs(tmp_path_factory.mktemp("jobs"), _good_jobs())
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.output}"
    return results


def _accuracy(booster: Any, x: np.ndarray, y: np.ndarray) -> float:
    body, _ = predict(booster, _csv(x), "text/csv", "text/csv")
    scores = np.array([float(v) for v in body.decode().split(",")])
    return float(((scores > 0.5) == y).mean())


def test_csv_with_validation_and_early_stopping(trained: dict[str, Result]) -> None:
    result = trained["early_stopping"]
    lines = [line for line in result.output.splitlines() if re.match(r"^\[\d+\]\t", line)]
    assert lines[0].startswith("[0]\ttrain-auc:") and "\tvalidation-auc:" in lines[0], result.output
    assert "Train matrix has 400 rows and 4 columns" in result.output
    assert "Validation matrix has 200 rows" in result.output
    booster = result.booster()  # plain XGBoost reads the file
    assert booster.num_boosted_rounds() < len(lines) < 200  # stopped early, kept the best rounds
    assert _accuracy(load_model(result.layout.model_dir), X[400:], Y[400:]) > 0.9
    assert result.layout.success_file.exists() and not result.layout.failure_file.exists()


def test_metric_definitions_match_the_logged_lines(trained: dict[str, Result]) -> None:
    definitions = {d["Name"]: re.compile(d["Regex"]) for d in metric_definitions()}
    assert definitions["train:logloss"].pattern == (
        r".*\[[0-9]+\].*#011train-logloss:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"
    )
    line = next(line for line in trained["softprob"].output.splitlines() if line.startswith("[9]"))
    cloudwatch = line.replace("\t", "#011")  # as the platform and CloudWatch show a tab
    logged = dict(re.findall(r"#011([\w-]+):([\d.]+)", cloudwatch))
    found = {name: m.group(1) for name, regex in definitions.items() if (m := regex.match(cloudwatch))}
    assert found == {
        "train:mlogloss": logged["train-mlogloss"],
        "train:merror": logged["train-merror"],
    }


def test_libsvm_nested_and_gzip_with_container_metrics(trained: dict[str, Result]) -> None:
    result = trained["libsvm"]
    assert "Loaded channel 'train' (libsvm): 600 rows" in result.output
    assert "train-error:" in result.output and "train-accuracy:" in result.output
    assert result.booster().num_boosted_rounds() == 5


def test_parquet(trained: dict[str, Result]) -> None:
    booster = load_model(trained["parquet"].layout.model_dir)
    assert booster.num_features() == 4 and _accuracy(booster, X, Y) > 0.9


def test_csv_weights_take_the_second_column(trained: dict[str, Result]) -> None:
    booster = load_model(trained["csv_weights"].layout.model_dir)
    assert booster.num_features() == 4
    assert _accuracy(booster, X, Y) > 0.9  # zero-weight (wrong) labels were ignored


def test_multiclass_softprob(trained: dict[str, Result]) -> None:
    booster = load_model(trained["softprob"].layout.model_dir)
    body, content_type = predict(booster, _csv(XM[:2]), "text/csv", "text/csv")
    rows = json.loads("[" + body.decode() + "]")  # the container writes each row as its list
    assert content_type == "text/csv" and len(rows) == 2 and all(len(r) == 3 for r in rows)
    probabilities = np.array(json.loads(predict(booster, _csv(XM), "text/csv", "application/json")[0])["predictions"])
    predicted = np.argmax([p["score"] for p in probabilities], axis=1)
    assert (predicted == YM).mean() > 0.85


def test_checkpoints_are_written_and_resumed(trained: dict[str, Result]) -> None:
    result = trained["checkpoints"]
    names = sorted(p.name for p in result.layout.checkpoints_dir.iterdir())
    assert names == [f"xgboost-checkpoint.{i}" for i in range(3, 8)]  # the five most recent
    hps = json.loads(result.layout.hyperparameters_file.read_text())
    result.layout.hyperparameters_file.write_text(json.dumps({**hps, "num_round": "10"}))
    resumed = _run(result.layout)
    assert resumed.returncode == 0, resumed.output
    assert "Resuming from iteration 8" in resumed.output
    assert resumed.booster().num_boosted_rounds() == 10


# --- bad input -------------------------------------------------------------------------------------

OK_CSV = {"train": {"t.csv": b"1,2\n0,3\n"}}
BAD_JOBS = {
    "header": (
        Job({"train": {"h.csv": b"label,a\n1,2\n"}}, {"num_round": "2"}),
        "train/h.csv line 1 looks like a header row",
    ),
    "not_a_number": (
        Job({"train": {"d/n.csv": b"1,2\n0,x\n"}}, {"num_round": "2"}),
        "train/d/n.csv line 2, column 2: 'x' is not a number",
    ),
    "ragged": (Job({"train": {"r.csv": b"1,2,3\n0,3\n"}}, {"num_round": "2"}), "train/r.csv line 2 has 2 columns"),
    "empty_train": (Job({"train": {"e.csv": b""}}, {"num_round": "2"}), "No data in training channel path"),
    "no_train": (Job({"validation": {"v.csv": b"1,2\n"}}, {"num_round": "2"}), "Missing required channel: train"),
    "no_num_round": (Job(OK_CSV, {}), "Missing required hyperparameter: num_round"),
    "unknown": (Job(OK_CSV, {"num_round": "2", "max_dept": "3"}), "Extraneous hyperparameter found: max_dept"),
    "not_int": (Job(OK_CSV, {"num_round": "2", "max_depth": "abc"}), "max_depth: value 'abc' is not an integer"),
    "range": (Job(OK_CSV, {"num_round": "2", "max_depth": "-1"}), "max_depth: value -1 is not in [0, +inf)"),
    "choice": (Job(OK_CSV, {"num_round": "2", "booster": "gbtre"}), "booster: value 'gbtre' is not one of"),
    "num_class": (
        Job({"train": {"t.csv": b"0,2\n3,2\n"}}, {"num_round": "2", "objective": "multi:softmax", "num_class": "2"}),
        "train/t.csv line 2: label 3 is not an integer in [0, num_class)",
    ),
    "logistic_label": (
        Job({"train": {"t.csv": b"0,2\n1,2\n2,1\n"}}, {"num_round": "2", "objective": "binary:logistic"}),
        "train/t.csv line 3: label 2 is outside [0, 1]",
    ),
    "bad_libsvm": (
        Job({"train": {"s.libsvm": b"1 0:1 2:3\n0 1=2\n"}}, {"num_round": "2"}, content_type="text/libsvm"),
        "train/s.libsvm line 2 '0 1=2' is not libsvm",
    ),
    "content_type": (Job(OK_CSV, {"num_round": "2"}, content_type="image/png"), "image/png is not an accepted"),
}


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    return run_jobs(tmp_path_factory.mktemp("bad"), {name: job for name, (job, _) in BAD_JOBS.items()})


@pytest.mark.parametrize("name", sorted(BAD_JOBS))
def test_bad_input_fails_with_a_reason(failed: dict[str, Result], name: str) -> None:
    result, message = failed[name], BAD_JOBS[name][1]
    assert result.returncode == 1, result.output
    assert result.failure.startswith("ClientError: ") and message in result.failure, result.failure
    assert message in result.output  # logged too
    assert not (result.layout.model_dir / "xgboost-model").exists()


# --- two hosts -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_hosts_train_one_model(tmp_path: Path) -> None:
    hosts = ("algo-1", "algo-2")
    env = {HOST_ADDRESSES_ENV: json.dumps(dict.fromkeys(hosts, "127.0.0.1")), TRACKER_PORT_ENV: str(_free_port())}
    shards = {"algo-1": slice(0, 300), "algo-2": slice(300, 600)}
    procs = {}
    for host in hosts:
        job = Job(
            {"train": {f"{host}.csv": _csv(Y[shards[host]], X[shards[host]])}},
            {"objective": "binary:logistic", "num_round": "10", "tree_method": "hist"},
            hosts=hosts,
        )
        layout = job.layout(tmp_path, host)
        command = [sys.executable, "-m", "opensage.images.xgboost", "train"]
        procs[host] = (
            layout,
            subprocess.Popen(
                command, env=_env(layout, env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            ),
        )
    outputs = {
        host: (layout, proc.communicate(timeout=120)[0], proc.returncode) for host, (layout, proc) in procs.items()
    }
    for host, (_, output, code) in outputs.items():
        assert code == 0, f"{host}: {output}"
    first, second = outputs["algo-1"], outputs["algo-2"]
    assert "Distributed node training with 2 hosts" in first[1]
    assert re.search(r"\[9\]\ttrain-logloss:", first[1]), first[1]  # rank 0 prints the evaluation
    assert (first[0].model_dir / "xgboost-model").exists() and not (second[0].model_dir / "xgboost-model").exists()
    assert _accuracy(load_model(first[0].model_dir), X, Y) > 0.9


# --- serving helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary_model() -> Any:
    import xgboost as xgb

    return xgb.train({"objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(X, label=Y), 10)


@pytest.fixture
def serving_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("SAGEMAKER_BATCH", "SAGEMAKER_INFERENCE_OUTPUT", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def test_predict_csv_answers_as_the_container(binary_model: Any, serving_env: pytest.MonkeyPatch) -> None:
    expected = binary_model.inplace_predict(X[:3]).tolist()
    body, content_type = predict(binary_model, _csv(X[:3]), "text/csv; charset=utf-8", "*/*")
    assert (body.decode(), content_type) == (",".join(map(str, expected)), "text/csv")
    serving_env.setenv("SAGEMAKER_BATCH", "true")
    assert (
        predict(binary_model, _csv(X[:3]), "text/csv", "text/csv")[0].decode() == "\n".join(map(str, expected)) + "\n"
    )
    body, content_type = predict(binary_model, _csv(X[:2]), "text/csv", "application/json")
    assert json.loads(body) == {"predictions": [{"score": s} for s in expected[:2]]}
    body, content_type = predict(binary_model, _csv(X[:2]), "text/csv", "application/jsonlines")
    assert [json.loads(line) for line in body.decode().splitlines()] == [{"score": s} for s in expected[:2]]
    assert content_type == "application/jsonlines"


def test_predict_other_request_types(binary_model: Any, serving_env: pytest.MonkeyPatch) -> None:
    expected = binary_model.inplace_predict(X[:2]).tolist()
    libsvm = _libsvm(np.zeros(2), X[:2])
    assert np.allclose(
        [float(v) for v in predict(binary_model, libsvm, "text/libsvm", "text/csv")[0].split(b",")], expected
    )
    as_json = json.dumps({"instances": X[:2].tolist()}).encode()
    assert np.allclose(
        json.loads(predict(binary_model, as_json, "application/json", "application/json")[0])["predictions"][0][
            "score"
        ],
        expected[0],
    )
    semicolons = _csv(X[:2]).replace(b",", b";")
    assert np.allclose(
        [float(v) for v in predict(binary_model, semicolons, "text/csv", "text/csv")[0].split(b",")], expected
    )


def test_predict_selectable_outputs(binary_model: Any, serving_env: pytest.MonkeyPatch) -> None:
    serving_env.setenv("SAGEMAKER_INFERENCE_OUTPUT", "predicted_label, probabilities")
    p = binary_model.inplace_predict(X[:1]).tolist()[0]
    body, _ = predict(binary_model, _csv(X[:1]), "text/csv", "application/json")
    assert json.loads(body) == {"predictions": [{"predicted_label": int(p > 0.5), "probabilities": [1.0 - p, p]}]}
    body, _ = predict(binary_model, _csv(X[:1]), "text/csv", "text/csv")
    assert body.decode() == f'{int(p > 0.5)},"{[1.0 - p, p]}"'


@pytest.mark.parametrize(
    ("body", "content_type", "accept", "message"),
    [
        (b"", "text/csv", "text/csv", "empty"),
        (b"1,2", "text/csv", "text/csv", "expects 4 features"),
        (b"1,abc,3,4", "text/csv", "text/csv", "Unable to parse"),
        (b"1,2,3,4", "image/png", "text/csv", "not supported"),
        (b"{oops", "application/json", "text/csv", "Unable to parse"),
        (b"0 7:1", "text/libsvm", "text/csv", "larger than feature size of trained model 4"),
        (b"1,2,3,4", "text/csv", "image/png", "not an accepted Accept type"),
    ],
)
def test_predict_rejects_bad_requests(
    binary_model: Any, serving_env: pytest.MonkeyPatch, body: bytes, content_type: str, accept: str, message: str
) -> None:
    with pytest.raises(PredictError, match=re.escape(message)):
        predict(binary_model, body, content_type, accept)


# --- models trained on AWS ---------------------------------------------------------------------------

# A model saved by XGBoost 1.7.6's Booster.save_model("xgboost-model"), as the 1.3-1 ... 1.7-1 containers
# save it (the old binary format), and the same model pickled with best_iteration=1 as the 1.0-1 ... 1.2-2
# containers pickle it; with XGBoost 1.7.6's predictions for two rows (all trees, and the first two).
LEGACY_BINARY = (
    "eNpLysxLY2BgsGdmgABGJJodSsPEaA34oXRSZl5iUaVVTn56ZnFJZjIbVDg9qaQoNZWZjg4iB4DcxozEZx4EbvoPBCB3MUG4DQwMB+xB9H8ogA"
    "g77IepRRIDqpvgCFTvANEHAw5A/oH9aHz7oez/yGAODP8DxexjTJkdn4UvR/H/s3B1h8jgjv1o/CHt/2U5t/eh+395zm27a2/6HKK7mxzEjKYb"
    "w8yL7mZyWJYTDfd/DJC/PCfaHt1emN/5YBk7tbgkPrMktSixJDM/D5aLjQSQpfNAmTw+JzM3swSmwJgTyshPykpNLsksS3WBClQr5SXmpipZKa"
    "EVGUo6SkWp6fE5+cXF8QWJRYm5SlbVSsXJiTmp8QX5xfHlqZnpGSVAbYZKtbUAnyuaMA=="
)
LEGACY_PICKLE = (
    "eNrtWEGPGzUUniS7mybb3abdqgj1SCVaCVbbLdsDBxqK4NJyoUIUbSXLM/MycesZT2xn26WKKEhISEiIG/+g/Re0v4JL75z4D/DsSexJ1ikgVd"
    "VSNatZTezPfs/f+96bN3nUSh5ksRBKbydCQve6uQXZHUWXvhs1JqPmxdtrURQNaZFyGLWSeMy4ZoXqxocaqJT0sDtauX7+7Sh6eDOqPmufiGLA"
    "Mve9zRFYgHQDGxngV5aQkkqau+FzA8o4EQVhxQHlLCVZOSYsvTWbb+w4Cwszzfcvu6mC3BWxCixqF3oogYb2OynxeCInSlMNgfkVBRBad8aMkx"
    "IkYcgZ1UwUAdSWPQ3uXJ0XEFrz7/JkdtvLJE0ZFJrEVRAcM2eyWEsAkosU+AJrp4txboc4xzkDq+09u+sYkJmrGb7i7Cr2DRAM0oAcQKKFrJ1h"
    "suiClpQVCy50Sgkpm1u5QsdaOHpLKRJQiujD0nvXTmFAx1zPvq9XRwQ9FJ7rVXhAEwdpj0vDozezlUlxnySC5/QeyPdKOS7A7TcFEwWjFy5wZ1"
    "wpMDq3vMjsiR3PqoSEDRgGfLrxZ4tu1QRet+KGz85GgiyenvJBUiYxDHUtrdoMcruLEkFQKDAmQkpaD+2/Snk5pAF9dhKaDIHgrgHlnEYTiuYl"
    "BxIfcjgAHgD16qACRfpPmCUybYH2DrZ2tvec7xnN85Dv65bpUnCWHLrpTgqlHt5nygXvLVaYBLWsImmFsgRpnw2RizqneZzSgHMbNgisyIisV4"
    "m6m+2cPiAx84Fr7e5ddUyayYRqYsqQGgpeq19XPziKElgKYShqQXGgTQPCUqApliwoQzGtEEiDn9yd3XXNJJ7mAEJ1spejdJIh4ym5Dywb6gBm"
    "02BUyZkmXKjQLmdzUQiNJwjS3bx4yddeGBg+bAEKlS4JGVkm3a6ZXBqxU1ZvJmILVaU9LthAyNz5oO6BTobElvAAYT2FqYTpdjRyWzvbuzvzH+"
    "+5GseV4us56pJ01Rafh29y9k3OvsnZY56zPmu3ps1ssBfrxhQtKtNI+05o71PfnZ6xnR0ZSGw2MZSSZku7tYTTYJDWzeQAqB7XjPhmrms7PSoz"
    "0KHOwLkfqjbtad+5rAU6nzJFYywGs04FsLM1ccJePtSlp1Zt4Z6wI+K7pss58Ic4hVlI5eGHXGRMaZZMfIpaE2r/HWfkYbhna+NaI+7JUTNLVi"
    "waddliVYpbLXDUUwlFBkqhjmTa5ZpM2hhchYXLu9xiDdZma778f24EtPwlqUs1Hjoea1BubDMGVE/gXcOr3iIK20pzltfYb1xxpjem8iGGiRqr"
    "0RGAadhDgOWvKqv53LGOwZtLxzrAioGoByMyf85pa6A27Xw8aTO6irTav5B6yCP89/RZFF175mnp4kMAMiEZbnaBB2jz88Q8csOorRpKQZYjzQ"
    "i8+eLtDBNh1MlZtnIY6P0LX/ojNDyoyVJPx4ZBVo8TCUXdx5ah9q/pxxmwaZIMaZHBPEcf/xJFi+60MeLViWrbfovbLQI3pSF9qRvNRTd61bMN"
    "H10pM9kx74oJ09M+hqtfk3m1guGCZD4WrSg66nm3gpucmKOxBllXqNYhvuoyWsyZ76P5fr+63H5WmPM5Yas7pgro4A8O/1D8bbJYYf3XZJn8W8"
    "X/eOvra3i9HopvvHzFt/buHCfFn8BwnfDhepWKf/LVH/13q+v/qvgrv+6ee7rPH1/b509eD8U3X7ri+z//+fsxUvxvz/njj577cL1KxX//036/"
    "aa87x1LxL/6h83V5xTl+Lf9ktPrDaO2LUfv2Jo7O9/CjEzcat3uz4VrjPurcaI7j7b8BwuSFuQ=="
)
LEGACY_ALL_TREES = [0.15302303433418274, 0.8469769358634949]
LEGACY_TWO_TREES = [0.21712127327919006, 0.7828786969184875]


def test_models_from_aws_containers_load_and_predict_the_same(tmp_path: Path) -> None:
    rows = b"0,1,2\n3,1,1"
    (tmp_path / "xgboost-model").write_bytes(zlib.decompress(base64.b64decode(LEGACY_BINARY)))
    binary = load_model(tmp_path)  # XGBoost 3 cannot read this format itself
    scores = [float(v) for v in predict(binary, rows, "text/csv", "text/csv")[0].split(b",")]
    assert np.allclose(scores, LEGACY_ALL_TREES, rtol=0, atol=1e-7)
    pickled = load_model_bytes(zlib.decompress(base64.b64decode(LEGACY_PICKLE)))
    scores = [float(v) for v in predict(pickled, rows, "text/csv", "text/csv")[0].split(b",")]
    assert np.allclose(scores, LEGACY_TWO_TREES, rtol=0, atol=1e-7)  # the best iteration, as those servers predict


def test_a_pickle_of_anything_but_a_booster_is_refused() -> None:
    import pickle

    with pytest.raises(ValueError, match="not only an xgboost Booster"):
        load_model_bytes(pickle.dumps(os.system))


def test_hyperparameter_aliases_and_container_rules() -> None:
    values = hyperparameters.validate(
        {"num_round": "3", "learning_rate": "0.1", "reg_alpha": "1", "sagemaker_region": "x"}
    )
    assert values == {"num_round": 3, "eta": 0.1, "alpha": 1.0}
    with pytest.raises(hyperparameters.HyperparameterError, match="Require input for parameter 'num_class'"):
        hyperparameters.validate({"num_round": "3", "objective": "multi:softprob"})
    with pytest.raises(hyperparameters.HyperparameterError, match="Metric 'auc' can only be applied"):
        hyperparameters.validate({"num_round": "3", "objective": "reg:squarederror", "eval_metric": "auc"})
    with pytest.raises(hyperparameters.HyperparameterError, match="Did you mean 'max_depth'"):
        hyperparameters.validate({"num_round": "3", "max_dept": "2"})
    with pytest.raises(hyperparameters.HyperparameterError, match="predicts one value per row"):
        hyperparameters.validate({"num_round": "3", "objective": "binary:logistic", "num_class": "2"})
    with pytest.raises(hyperparameters.HyperparameterError, match=r"eta: value 1.5 is not in \[0, 1\]"):
        hyperparameters.validate({"num_round": "3", "eta": "1.5"})


def test_tuning_metric_joins_eval_metric_and_drives_early_stopping() -> None:
    from opensage.images.xgboost.boosting import default_tree_method, eval_plan, model_format

    plan = eval_plan({"eval_metric": ["logloss", "f1"], "_tuning_objective_metric": "validation:auc"})
    assert (plan.xgboost_metrics, plan.own_metrics, plan.stopping_metric) == (["auc", "logloss"], ["f1"], "auc")
    assert eval_plan({"eval_metric": ["auc", "error"]}).stopping_metric == "error"
    assert default_tree_method("1.7-1", rows=1000, hosts=1) == "exact"
    assert default_tree_method("1.2-2", rows=1000, hosts=2) == "approx"
    assert default_tree_method("3.0-5", rows=1000, hosts=1) is None
    assert (model_format("1.7-1"), model_format("1.5-1"), model_format("")) == ("ubj", "json", "ubj")
