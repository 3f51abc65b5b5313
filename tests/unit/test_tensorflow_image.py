"""The TensorFlow image's pieces: TF_CONFIG as SageMaker's toolkit writes it, and the TF Serving request rewriting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from opensage.images.framework import tfdist
from opensage.images.framework.tensorflow import PredictError, find_saved_model, tfs_request

ENV = {
    "SM_HOSTS": '["algo-1", "algo-2", "algo-3"]',
    "OPENSAGE_HOST_ADDRESSES": json.dumps({h: "127.0.0.1" for h in ("algo-1", "algo-2", "algo-3")}),
    "OPENSAGE_HOST_PORTS": json.dumps({"algo-1": [5001, 5002], "algo-2": [5003, 5004], "algo-3": [5005, 5006]}),
}


def test_multi_worker_mirrored_strategy_makes_every_host_a_worker() -> None:
    config = tfdist.Cluster({**ENV, "SM_CURRENT_HOST": "algo-2"}).mwms()
    assert config["cluster"] == {"worker": ["127.0.0.1:5001", "127.0.0.1:5003", "127.0.0.1:5005"]}
    assert config["task"] == {"index": 1, "type": "worker"}


def test_parameter_servers_a_master_and_workers() -> None:
    master = tfdist.Cluster({**ENV, "SM_CURRENT_HOST": "algo-1"})
    worker = tfdist.Cluster({**ENV, "SM_CURRENT_HOST": "algo-3"})
    config = master.parameter_server()
    assert config["cluster"] == {
        "master": ["127.0.0.1:5001"],
        "ps": ["127.0.0.1:5002", "127.0.0.1:5004", "127.0.0.1:5006"],
        "worker": ["127.0.0.1:5003", "127.0.0.1:5005"],
    }
    assert config["task"] == {"index": 0, "type": "master"}
    assert worker.parameter_server()["task"] == {"index": 1, "type": "worker"}
    assert worker.parameter_server(ps_task=True)["task"] == {"index": 2, "type": "ps"}


def test_an_s3_model_dir_becomes_the_local_model_directory() -> None:
    user = {"model_dir": "s3://bucket/job/model", "epochs": 3}
    tfdist.local_model_dir(user, {"SM_MODEL_DIR": "/opt/ml/model"})
    assert user == {"model_dir": "/opt/ml/model", "epochs": 3}


@pytest.mark.parametrize(
    ("body", "content_type", "request_"),
    [
        (b'{"instances": [[1, 2]]}', "application/json", {"instances": [[1, 2]]}),
        (b'{"inputs": {"a": [1]}}', "application/json", {"inputs": {"a": [1]}}),
        (b"[[1, 2], [3, 4]]", "application/json", {"instances": [[1, 2], [3, 4]]}),
        (b"[1, 2]", "application/json", {"instances": [[1, 2]]}),
        (b'{"a": 1}\n{"a": 2}\n', "application/jsonlines", {"instances": [{"a": 1}, {"a": 2}]}),
        (b"1.5,2\n3,4\n", "text/csv", {"instances": [[1.5, 2], [3, 4]]}),
        (b"7\n8\n", "text/csv", {"instances": [7, 8]}),
    ],
)
def test_requests_are_rewritten_as_the_containers_proxy_does(body: bytes, content_type: str, request_: dict) -> None:
    assert tfs_request(body, content_type) == request_


def test_bad_requests_say_why() -> None:
    with pytest.raises(PredictError, match="Unsupported Media Type"):
        tfs_request(b"x", "application/x-npy")
    with pytest.raises(PredictError, match="JSON Parse error"):
        tfs_request(b"{not json", "application/json")


def test_the_highest_version_directory_is_served(tmp_path: Path) -> None:
    for version in ("1", "20", "3"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    assert find_saved_model(tmp_path).name == "20"
    with pytest.raises(FileNotFoundError, match="no SavedModel"):
        find_saved_model(tmp_path / "20" / "variables")


def test_a_saved_model_answers_rows_and_columns(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    from opensage.images.framework import tensorflow as serving

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x: object) -> dict:
            return {"y": tf.reduce_sum(x, axis=1) * 2.0}

    module = Double()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    served = serving.load_model(tmp_path)
    body, media = serving.predict(served, b"[[1, 2], [3, 4]]", "application/json", "application/json")
    assert media == "application/json" and json.loads(body) == {"predictions": [6.0, 14.0]}
    body, _ = serving.predict(served, b'{"inputs": [[1, 1]]}', "application/json", "")
    assert json.loads(body) == {"outputs": [4.0]}
    with pytest.raises(PredictError) as caught:
        serving.predict(served, b"[[1, 2, 3]]", "application/json", "")
    assert "error" in json.loads(str(caught.value))
    assert np.isclose(json.loads(serving.predict(served, b"0.5,0.5", "text/csv", "")[0])["predictions"][0], 2.0)


PRE_POST = """
import json

def input_handler(data, context):
    rows = [[float(v) * 10 for v in line.split(";")] for line in data.read().decode().split()]
    return json.dumps({"instances": rows})

def output_handler(response, context):
    if response.status_code != 200:
        raise ValueError(response.content.decode())
    doc = {"doubled_sums": response.json()["predictions"], "accept": context.accept_header}
    return json.dumps(doc), "application/json"
"""

WHOLE = """
import json, requests

def handler(data, context):
    body = json.loads(data.read())
    answer = requests.post(context.rest_uri, data=json.dumps({"inputs": body["x"]})).json()
    return json.dumps({"y": answer["outputs"], "method": context.method}), context.accept_header
"""


@pytest.mark.parametrize("script", ["pre_post", "whole"])
def test_inference_py_handlers_run_around_tensorflow_serving(tmp_path: Path, script: str) -> None:
    tf = pytest.importorskip("tensorflow")
    from opensage.images.framework import tensorflow as serving

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x: object) -> dict:
            return {"y": tf.reduce_sum(x, axis=1) * 2.0}

    module = Double()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(PRE_POST if script == "pre_post" else WHOLE)
    served = serving.load_model(tmp_path)
    if script == "pre_post":
        body, media = serving.predict(served, b"1;2\n0.5;0.5\n", "text/plain", "application/json")
        assert media == "application/json"
        assert json.loads(body) == {"doubled_sums": [60.0, 20.0], "accept": "application/json"}
        with pytest.raises(ValueError, match="error"):  # TF Serving's 400 reaches output_handler
            serving.predict(served, b"1;2;3\n", "text/plain", "application/json")
    else:
        body, media = serving.predict(served, b'{"x": [[1, 1], [2, 3]]}', "application/json", "application/json")
        assert json.loads(body) == {"y": [4.0, 10.0], "method": "predict"} and media == "application/json"
