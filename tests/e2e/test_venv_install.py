"""A new user's install: a fresh virtual environment, the README's ``pip install .``, then ``opensage up``.

The platform then runs on the venv's interpreter, not on the machine's base Python: a script-mode
job whose ``requirements.txt`` adds a package must still import scikit-learn, pandas and joblib
(which only the venv has), and the CPU-only install must not carry NCCL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

TRAIN = """
import argparse, os
import joblib, pandas as pd, termcolor
from sklearn.linear_model import LogisticRegression

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", default=os.environ["SM_MODEL_DIR"])
    args = parser.parse_args()
    frame = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"), header=None)
    model = LogisticRegression().fit(frame.iloc[:, 1:], frame.iloc[:, 0])
    print("termcolor from", termcolor.__file__)
    joblib.dump(model, os.path.join(args.model_dir, "model.joblib"))
"""

FIT = """
import sagemaker
from sagemaker.sklearn import SKLearn
session = sagemaker.Session()
uri = session.upload_data("train.csv", key_prefix="venv-install/train")
est = SKLearn(entry_point="train.py", source_dir="src", framework_version="1.2-1", instance_type="ml.m5.large",
              role=sagemaker.get_execution_role(), sagemaker_session=session)
est.fit({"train": uri}, logs=True)
print("STATUS", est.latest_training_job.describe()["TrainingJobStatus"])
"""


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m venv`` and ``pip install <checkout>``, exactly as the README says (pip's cache makes it quick)."""
    root = tmp_path_factory.mktemp("venv")
    source = root / "opensage"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "test-artifacts"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = str(root / "venv" / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(source)], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    yield python


def test_the_install_is_cpu_only(venv_python: str) -> None:
    listed = subprocess.run([venv_python, "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
    names = {line.split()[0].lower() for line in listed.splitlines()[2:] if line.strip()}
    assert "xgboost-cpu" in names and not any(n.startswith("nvidia-") for n in names), sorted(names)


def test_requirements_keep_the_platforms_packages_in_a_venv_install(venv_python: str, tmp_path: Path) -> None:
    with running_platform(tmp_path / "home", tmp_path / "aws", python=venv_python) as platform:
        _fit(platform, tmp_path)


def _fit(platform: RunningPlatform, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent(TRAIN))
    (src / "requirements.txt").write_text("termcolor\n")  # not in the platform's venv: installed for the job
    (tmp_path / "train.csv").write_text("".join(f"{i % 2},{i % 2 + 0.1 * i},{i}\n" for i in range(40)))
    out = platform.run_python(FIT, tmp_path, timeout=600)  # the SDK is the base Python's; OpenSage runs in the venv
    assert "STATUS Completed" in out, out[-3000:]
    line = [line for line in out.splitlines() if line.startswith("termcolor from")][-1]
    assert str(platform.home) in line  # the requirement came from the job's environment under the home
