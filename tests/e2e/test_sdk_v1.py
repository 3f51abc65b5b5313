"""The SageMaker Python SDK v1 (``sagemaker<2``) of older articles: ``get_image_uri``, ``train_instance_count``,
``csv_serializer``.

v1 needs ``protobuf<3.21`` and cannot share an interpreter with v2, so its scripts run in a virtual
environment of their own, named by ``OPENSAGE_TEST_SDK_V1_PYTHON`` (``.ci/run`` makes it: ``python -m
venv v1 && v1/bin/pip install 'sagemaker<2' 'protobuf<3.21'``); they only talk to the platform over HTTP.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
PYTHON_ENV = "OPENSAGE_TEST_SDK_V1_PYTHON"

# The README's v1 snippet, as written there (``train.csv`` beside it: label first, no header).
README_SNIPPET = """
import numpy as np
import sagemaker
from sagemaker.amazon.amazon_estimator import get_image_uri
from sagemaker.predictor import csv_serializer

session = sagemaker.Session()
train = session.upload_data("train.csv", key_prefix="v1/xgboost")
estimator = sagemaker.estimator.Estimator(
    get_image_uri(session.boto_region_name, "xgboost", repo_version="1.0-1"),
    sagemaker.get_execution_role(),
    train_instance_count=1,
    train_instance_type="ml.m5.large",
    sagemaker_session=session,
)
estimator.set_hyperparameters(objective="binary:logistic", num_round=20)
estimator.fit({"train": sagemaker.s3_input(train, content_type="text/csv")})
predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large")
predictor.content_type = "text/csv"
predictor.serializer = csv_serializer
print("PREDICTION", predictor.predict(np.array([[3.0, 0, 0], [-3.0, 0, 0]])).decode())
predictor.delete_endpoint()
"""


def _python() -> str:
    python = os.environ.get(PYTHON_ENV, "")
    if not python:
        pytest.skip(
            f"{PYTHON_ENV} is not set: point it at the python of a venv with 'sagemaker<2' 'protobuf<3.21' "
            "(.ci/run makes one)"
        )
    found = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('sagemaker'))"], capture_output=True, text=True
    )
    if found.returncode != 0 or not found.stdout.startswith("1."):
        pytest.fail(f"{PYTHON_ENV}={python} has no SageMaker SDK v1: {(found.stdout + found.stderr).strip()[-500:]}")
    return python


@pytest.fixture(scope="module")
def v1_python() -> str:
    return _python()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, v1_python: str) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("sdk-v1")
    with running_platform(root / "home", root / "aws") as running:
        yield running


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    work = tmp_path_factory.mktemp("v1-work")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    np.savetxt(work / "train.csv", np.column_stack([(x[:, 0] > 0).astype(int), x]), delimiter=",", fmt="%.5f")
    return work


def _values(out: str, key: str) -> list[str]:
    return re.findall(rf"(?:^|[-!]){key} (.*)$", out, re.MULTILINE)


def test_readme_snippet_fit_deploy_predict(platform: RunningPlatform, v1_python: str, workdir: Path) -> None:
    """get_image_uri + Estimator(train_instance_count=...) -> fit -> deploy -> predict with csv_serializer."""
    out = platform.run_python(README_SNIPPET, workdir, timeout=600, python=v1_python)
    scores = [float(v) for v in re.split(r"[,\s]+", _values(out, "PREDICTION")[0].strip())]
    assert scores[0] > 0.5 > scores[1]
    sm = platform.session().client("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == []  # delete_endpoint() went through


def test_legacy_xgboost_image(platform: RunningPlatform, v1_python: str, workdir: Path) -> None:
    """``get_image_uri(region, 'xgboost')`` (the legacy ``xgboost:1`` image of the oldest articles) trains."""
    out = platform.run_python(
        """
        import sagemaker
        from sagemaker.amazon.amazon_estimator import get_image_uri
        session = sagemaker.Session()
        train = session.upload_data("train.csv", key_prefix="v1/legacy")
        image = get_image_uri(session.boto_region_name, "xgboost")
        estimator = sagemaker.estimator.Estimator(image, sagemaker.get_execution_role(), train_instance_count=1,
                                                  train_instance_type="ml.m5.large", sagemaker_session=session)
        estimator.set_hyperparameters(objective="binary:logistic", num_round=10)
        estimator.fit({"train": sagemaker.s3_input(train, content_type="csv")})
        print("IMAGE", image)
        print("MODEL", estimator.model_data)
        """,
        workdir,
        timeout=600,
        python=v1_python,
    )
    assert _values(out, "IMAGE")[0].endswith("/xgboost:1")
    assert _values(out, "MODEL")[0].endswith("/output/model.tar.gz")
