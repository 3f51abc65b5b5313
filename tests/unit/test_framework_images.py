"""Framework images: the SDK's image URIs, the training toolkit's conventions, the inference defaults."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from opensage.images import registry
from opensage.images.framework import encoders, environments, toolkit
from opensage.images.framework.inference import PredictError


@pytest.mark.parametrize(
    ("framework", "version", "scope", "expected"),
    [
        ("sklearn", "0.23-1", "training", "sklearn"),
        ("sklearn", "1.2-1", "inference", "sklearn"),
        ("pytorch", "1.13", "training", "pytorch"),
        ("pytorch", "2.1", "inference", "pytorch"),
        ("xgboost", "1.5-1", "training", "xgboost"),
        ("xgboost", "1.7-1", "inference", "xgboost"),
    ],
)
@pytest.mark.filterwarnings("ignore::Warning")  # the SDK v2's deprecation notice
def test_the_sdks_image_uris_resolve(
    framework: str, version: str, scope: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    from sagemaker import image_uris

    py = {"pytorch": "py310" if version == "2.1" else "py39", "sklearn": "py3", "xgboost": "py3"}[framework]
    uri = image_uris.retrieve(
        framework, "us-east-1", version=version, py_version=py, instance_type="ml.m5.xlarge", image_scope=scope
    )
    image = registry.resolve(uri)
    assert image is not None and image.name == expected, uri


def test_xgboost_runs_the_users_script_when_the_job_names_one() -> None:
    image = registry.resolve("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1")
    assert image is not None
    assert image.train_argv({})[-2:] == ("opensage.images.xgboost", "train")
    assert image.train_argv({"sagemaker_program": '"train.py"'})[-2:] == ("opensage.images.framework", "train")
    assert image.serve_argv({})[-1] == "opensage.images.xgboost.serve"
    assert image.serve_argv({"SAGEMAKER_PROGRAM": "inference.py"})[-1] == "opensage.images.framework.xgboost"
    sklearn = registry.resolve("python:3.11")
    assert sklearn is not None and sklearn.script_mode({}) and registry.resolve("nginx:latest") is None


def test_hyperparameters_become_the_toolkits_arguments() -> None:
    decoded = {k: toolkit.decode(v) for k, v in {"epochs": "10", "lr": "0.1", "name": '"resnet"', "x": "a b"}.items()}
    assert decoded == {"epochs": 10, "lr": 0.1, "name": "resnet", "x": "a b"}
    assert toolkit.to_cmd_args({"lr": 0.1, "epochs": 10, "C": 1, "opts": {"b": 2, "a": 1}}) == [
        "-C",
        "1",
        "--epochs",
        "10",
        "--lr",
        "0.1",
        "--opts",
        "a=1,b=2",
    ]
    env = toolkit.toolkit_env(
        {"SM_TRAINING_ENV": json.dumps({"job_name": "j"}), "SM_HP_OLD": "x"},
        {"epochs": 10, "model-name": "m"},
        {"sagemaker_program": "train.py", "sagemaker_submit_directory": "s3://b/k/sourcedir.tar.gz"},
    )
    assert env["SM_HP_EPOCHS"] == "10" and env["SM_HP_MODEL_NAME"] == "m" and "SM_HP_OLD" not in env
    assert json.loads(env["SM_USER_ARGS"]) == ["--epochs", "10", "--model-name", "m"]
    assert env["SM_MODULE_NAME"] == "train" and env["SM_MODULE_DIR"] == "s3://b/k/sourcedir.tar.gz"
    assert json.loads(env["SM_TRAINING_ENV"])["job_name"] == "j"


def test_the_last_error_line_of_a_traceback() -> None:
    lines = [
        "Traceback (most recent call last):",
        '  File "train.py", line 3, in <module>',
        "    raise ValueError('bad shape')",
        "ValueError: bad shape",
    ]
    assert toolkit.error_message(lines) == "ValueError: bad shape"
    assert toolkit.error_message(["some noise", "the end"]) == "the end"


def test_default_encoders_round_trip() -> None:
    array = np.array([[1.0, 2.0], [3.0, 4.0]])
    for media in encoders.SUPPORTED:
        assert np.allclose(encoders.decode(encoders.encode(array, media), media), array)
    buffer = io.BytesIO()
    np.save(buffer, array)
    assert encoders.decode(buffer.getvalue(), "application/x-npy").shape == (2, 2)
    with pytest.raises(encoders.UnsupportedFormatError):
        encoders.decode(b"x", "image/png")


def test_inference_handlers_from_a_users_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(
        "def model_fn(model_dir):\n    return lambda rows: [sum(r) for r in rows]\n"
        "def predict_fn(data, model):\n    return model(data.tolist())\n"
    )
    monkeypatch.delenv("SAGEMAKER_PROGRAM", raising=False)
    monkeypatch.delenv("SAGEMAKER_SUBMIT_DIRECTORY", raising=False)
    from opensage.images.framework import python as python_image

    model = python_image.load_model(tmp_path / "model")
    body, content_type = python_image.predict(model, b"[[1, 2], [3, 4]]", "application/json", "*/*")
    assert (json.loads(body), content_type) == ([3.0, 7.0], "application/json")
    body, content_type = python_image.predict(model, b"1,2\n3,4\n", "text/csv", "text/csv")
    assert body.decode().split() == ["3.0", "7.0"] and content_type == "text/csv"
    with pytest.raises(PredictError):
        python_image.predict(model, b"", "application/json", "application/json")
    with pytest.raises(PredictError):
        python_image.predict(model, b"x", "image/png", "application/json")


def test_requirements_environment_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A requirements.txt that needs nothing new builds once, then is reused; a bad one says why."""
    monkeypatch.setenv(environments.CACHE_ENV, str(tmp_path / "envs"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy\n")  # already there through the platform's site-packages
    messages: list[str] = []
    python = environments.ensure(requirements, messages.append)
    assert any("new environment" in m for m in messages)
    out = subprocess.run([str(python), "-c", "import numpy, sys; print(sys.prefix)"], capture_output=True, text=True)
    assert out.returncode == 0 and str(tmp_path / "envs") in out.stdout
    messages.clear()
    assert environments.ensure(requirements, messages.append) == python
    assert any("cached environment" in m for m in messages)
    bad = tmp_path / "bad" / "requirements.txt"
    bad.parent.mkdir()
    bad.write_text("numpy ==== 1\n")
    with pytest.raises(environments.RequirementsError):
        environments.ensure(bad, messages.append)
    assert not (tmp_path / "envs" / environments.key(bad)).exists()


def _wheel(directory: Path, name: str, version: str = "1.0") -> Path:
    """A pure-Python wheel of one module ``name`` (so that a requirement installs without a package index)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist}/RECORD,,\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for member, text in files.items():
            whl.writestr(member, text)
    return path


def test_requirements_environment_of_a_platform_in_a_virtualenv(tmp_path: Path) -> None:
    """Installed in a virtual environment, the platform's jobs see its packages plus the requirements.

    The platform here is a venv without system site-packages that holds a package of its own
    (``platform_only``); the base interpreter's packages (scikit-learn) must not leak in, the
    platform's must not vanish, and the requirement (a local wheel) is installed.
    """
    platform = tmp_path / "platform"
    subprocess.run([sys.executable, "-m", "venv", str(platform)], check=True)
    site_dir = next((platform / "lib").glob("python3*/site-packages"))
    (site_dir / "platform_only.py").write_text("HERE = True\n")
    (site_dir / "opensage_src.pth").write_text(str(Path(environments.__file__).parents[3]) + "\n")
    requirements = tmp_path / "code" / "requirements.txt"
    requirements.parent.mkdir()
    requirements.write_text(f"{_wheel(tmp_path, 'fresh_requirement')}\n")
    build = (
        "import sys; from pathlib import Path; from opensage.images.framework import environments;"
        "print(environments.ensure(Path(sys.argv[1]), lambda m: None))"
    )
    env = {**os.environ, environments.CACHE_ENV: str(tmp_path / "envs")}
    env.pop("PYTHONPATH", None)
    made = subprocess.run(
        [str(platform / "bin" / "python"), "-c", build, str(requirements)], capture_output=True, text=True, env=env
    )
    assert made.returncode == 0, made.stderr
    job_python = made.stdout.strip().splitlines()[-1]
    probe = (
        "import importlib.util as u, platform_only, fresh_requirement, opensage;"
        "print(u.find_spec('sklearn') is None, fresh_requirement.__file__)"
    )
    out = subprocess.run([job_python, "-c", probe], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    no_base_sklearn, installed_at = out.stdout.split()
    assert no_base_sklearn == "True" and installed_at.startswith(str(tmp_path / "envs"))


def test_requirements_environment_keeps_the_platforms_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script with requirements still imports scikit-learn, pandas and joblib from the platform."""
    monkeypatch.setenv(environments.CACHE_ENV, str(tmp_path / "envs"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{_wheel(tmp_path, 'extra_requirement')}\njoblib\n")
    python = environments.ensure(requirements, lambda m: None)
    code = "import sklearn, pandas, joblib, extra_requirement; print(joblib.__file__)"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not out.stdout.startswith(str(tmp_path))  # joblib was satisfied by the platform, not reinstalled


def test_distributed_pytorch_runs_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_HOSTS", '["algo-1", "algo-2"]')
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-2")
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    monkeypatch.setenv("OPENSAGE_HOST_ADDRESSES", '{"algo-1": "127.0.0.1", "algo-2": "127.0.0.1"}')
    monkeypatch.setenv("OPENSAGE_TRACKER_PORT", "29555")
    argv = toolkit._command("python", Path("/code"), "train.py", ["--epochs", "2"], distributed=True)
    assert argv[:3] == ["python", "-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc_per_node=1", "--node_rank=1", "--master_addr=127.0.0.1"} <= set(argv)
    assert "--master_port=29555" in argv and argv[-3:] == ["/code/train.py", "--epochs", "2"]
    assert toolkit._command("python", Path("/code"), "run.sh", [], distributed=False) == ["/bin/sh", "/code/run.sh"]
    assert toolkit._command("python", Path("/code"), "pkg.main", ["-x", "1"], distributed=False) == [
        "python",
        "-m",
        "pkg.main",
        "-x",
        "1",
    ]


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("382416733822.dkr.ecr.us-east-1.amazonaws.com/lda:1", "SageMaker's LDA, which"),
        ("763104351884.dkr.ecr.us-east-1.amazonaws.com/mxnet-training:1.9.0-cpu-py38", "retired upstream"),
        ("example.com/mine:1", "is not one OpenSage provides"),
    ],
)
def test_images_that_cannot_run_say_why_and_name_the_built_in_ones(uri: str, says: str) -> None:
    assert registry.resolve(uri) is None
    reason = registry.unavailable(uri, "training image")
    assert says in reason and "knn" in reason and "factorization-machines" in reason and "pca" in reason


def test_the_sdks_first_party_image_uris_resolve_to_the_built_ins() -> None:
    from sagemaker import image_uris

    for framework, module in [("pca", "opensage.images.pca"), ("knn", "opensage.images.knn"),
                              ("factorization-machines", "opensage.images.factorization_machines"),
                              ("randomcutforest", "opensage.images.randomcutforest"),
                              ("ipinsights", "opensage.images.ipinsights")]:
        for region in ("us-east-1", "eu-west-1"):
            image = registry.resolve(image_uris.retrieve(framework, region))
            assert image is not None and image.algorithm == module
