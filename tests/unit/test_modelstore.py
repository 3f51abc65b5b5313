"""The model server's multi-model mode (the /models contract) over every built-in serve module, in process.

Each case loads two different models of one framework under two names, invokes each, lists, describes,
unloads one and checks that the other still answers: XGBoost (the algorithm's server and script mode's
defaults), scikit-learn (a ``code/inference.py`` in each model, as the SDK repacks it) and PyTorch
(TorchScript ``model.pt``, the default ``model_fn``).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from opensage.serving.modelstore import MultiModelApp

ROWS = np.array([[2.0, 0, 0], [-2.0, 0, 0]], dtype=np.float32)


def _xgboost(directory: Path, rounds: int) -> None:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0).astype(int)), rounds)
    booster.save_model(str(directory / "xgboost-model.json"))
    (directory / "xgboost-model.json").rename(directory / "xgboost-model")


def _sklearn(directory: Path, rounds: int) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    joblib.dump(LogisticRegression(C=0.01 * rounds).fit(x, (x[:, 0] > 0).astype(int)), directory / "model.joblib")
    (directory / "code").mkdir()
    (directory / "code" / "inference.py").write_text(
        textwrap.dedent(
            """
            import os, joblib
            def model_fn(model_dir):
                return joblib.load(os.path.join(model_dir, "model.joblib"))
            def predict_fn(data, model):
                return model.predict_proba(data)[:, 1]
            """
        )
    )


def _pytorch(directory: Path, rounds: int) -> None:
    import torch

    class Scale(torch.nn.Module):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.factor = factor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * self.factor

    torch.jit.script(Scale(float(rounds))).save(str(directory / "model.pt"))


CASES: dict[str, tuple[str, Callable[[Path, int], None], str, str]] = {
    "xgboost": ("opensage.images.xgboost.serve", _xgboost, "text/csv", "text/csv"),
    "xgboost-script-mode": ("opensage.images.framework.xgboost", _xgboost, "text/csv", "text/csv"),
    "sklearn": ("opensage.images.framework.sklearn", _sklearn, "application/json", "application/json"),
    "pytorch": ("opensage.images.framework.pytorch", _pytorch, "application/json", "application/json"),
}


def _body(content_type: str) -> bytes:
    if content_type == "text/csv":
        return b"\n".join(",".join(str(v) for v in row).encode() for row in ROWS)
    return json.dumps(ROWS.tolist()).encode()


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_invoke_list_unload_for_each_built_in_server(case: str, tmp_path: Path) -> None:
    module, write, content_type, accept = CASES[case]
    for name, rounds in (("strong", 20), ("weak", 1)):
        directory = tmp_path / "models" / name / "model"
        directory.mkdir(parents=True)
        write(directory, rounds)
    app = MultiModelApp(module, tmp_path)  # /opt/ml/... URLs are read under the base, as on a host without mounts
    assert app.answer("GET", "/ping", b"", "", "")[0] == 200
    for name in ("strong", "weak"):
        load = json.dumps({"model_name": name, "url": f"/opt/ml/models/{name}/model"}).encode()
        status, body, _ = app.answer("POST", "/models", load, "application/json", "")
        assert status == 200, body
    assert app.answer("POST", "/models", load, "application/json", "")[0] == 409
    answers = {}
    for name in ("strong", "weak"):
        status, body, _ = app.answer("POST", f"/models/{name}/invoke", _body(content_type), content_type, accept)
        assert status == 200, body
        answers[name] = body
    assert answers["strong"] != answers["weak"]  # two models, each answering for itself
    listed = json.loads(app.answer("GET", "/models", b"", "", "")[1])["models"]
    assert {m["modelName"] for m in listed} == {"strong", "weak"}
    described = json.loads(app.answer("GET", "/models/weak", b"", "", "")[1])
    assert described == {"modelName": "weak", "modelUrl": "/opt/ml/models/weak/model"}
    assert app.answer("DELETE", "/models/weak", b"", "", "")[0] == 200
    assert app.answer("POST", "/models/weak/invoke", _body(content_type), content_type, accept)[0] == 404
    assert app.answer("DELETE", "/models/weak", b"", "", "")[0] == 404
    status, body, _ = app.answer("POST", "/models/strong/invoke", _body(content_type), content_type, accept)
    assert (status, body) == (200, answers["strong"])


def test_requests_the_contract_does_not_know_are_refused_clearly(tmp_path: Path) -> None:
    app = MultiModelApp("opensage.images.xgboost.serve", tmp_path)
    status, body, _ = app.answer("POST", "/models", b"{not json", "application/json", "")
    assert status == 400 and b"model_name" in body
    missing = json.dumps({"model_name": "gone", "url": str(tmp_path / "nowhere")}).encode()
    status, body, _ = app.answer("POST", "/models", missing, "application/json", "")
    assert status == 500 and b"gone" in body
    status, body, _ = app.answer("POST", "/invocations", b"1,2", "text/csv", "")
    assert status == 400 and b"TargetModel" in body
    assert app.answer("GET", "/models/nothing", b"", "", "")[0] == 404
