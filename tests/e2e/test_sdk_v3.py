"""The SageMaker Python SDK v3 (``sagemaker>=3``: ModelTrainer, ModelBuilder, sagemaker-core resources).

Beside it, the README's v2 snippet (``sagemaker<3``, this interpreter's SDK), so the two snippets of
its "Which SDK" section are both run.

v3 cannot share an interpreter with v2, so its scripts run in a virtual environment of their own,
named by ``OPENSAGE_TEST_SDK_V3_PYTHON`` (``.ci/run`` makes it: ``python -m venv v3 && v3/bin/pip
install 'sagemaker>=3'``); they only talk to the platform over HTTP. ModelTrainer's script mode
sends ``ContainerEntrypoint = ["/bin/bash", "-c", "... sm_train.sh"]`` and its drivers as the
``sm_drivers`` channel, which run unchanged.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
PYTHON_ENV = "OPENSAGE_TEST_SDK_V3_PYTHON"

# The README's v2 snippet, run as it is written there (``train.csv`` beside it: label first, no header).
README_V2_SNIPPET = """
import sagemaker
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.serializers import CSVSerializer

session = sagemaker.Session()
train = session.upload_data("train.csv", key_prefix="v2/xgboost")
estimator = Estimator(
    sagemaker.image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1"),
    sagemaker.get_execution_role(),
    instance_count=1,
    instance_type="ml.m5.large",
    hyperparameters={"objective": "binary:logistic", "num_round": 20},
)
estimator.fit({"train": TrainingInput(train, content_type="text/csv")})
predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large", serializer=CSVSerializer())
print("PREDICTION", predictor.predict([[3.0, 0, 0], [-3.0, 0, 0]]).decode())
predictor.delete_endpoint()
"""

# The README's v3 snippet, run as it is written there (``train.csv`` beside it: label first, no header).
README_SNIPPET = """
from sagemaker.core import image_uris
from sagemaker.core.helper.session_helper import Session, get_execution_role
from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, InputData

session = Session()
train = session.upload_data("train.csv", key_prefix="v3/xgboost")
trainer = ModelTrainer(
    training_image=image_uris.retrieve("xgboost", session.boto_region_name, "1.7-1"),
    role=get_execution_role(),
    compute=Compute(instance_type="ml.m5.large", instance_count=1),
    hyperparameters={"objective": "binary:logistic", "num_round": 20},
)
trainer.train(input_data_config=[InputData(channel_name="train", data_source=train, content_type="text/csv")])
print("MODEL", trainer._latest_training_job.model_artifacts.s3_model_artifacts)
"""

SCRIPT = """
import argparse, json, os
import joblib
import pandas as pd
import tabulate
from sklearn.linear_model import LogisticRegression

parser = argparse.ArgumentParser()
parser.add_argument("--C", type=float, default=1.0)
args = parser.parse_args()
data = pd.read_csv(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"), header=None)
model = LogisticRegression(C=args.C).fit(data.iloc[:, 1:], data.iloc[:, 0])
print(tabulate.tabulate([["accuracy", model.score(data.iloc[:, 1:], data.iloc[:, 0])]]))
joblib.dump(model, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
with open("/opt/ml/output/data/seen.json", "w") as f:
    json.dump({"hps": json.loads(os.environ["SM_HPS"]), "cwd": os.getcwd()}, f)
"""

INFERENCE = """
import os
import joblib

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def _python() -> str:
    python = os.environ.get(PYTHON_ENV, "")
    if not python:
        pytest.skip(f"{PYTHON_ENV} is not set: point it at the python of a venv with 'sagemaker>=3' (.ci/run does)")
    found = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('sagemaker'))"], capture_output=True, text=True
    )
    if found.returncode != 0 or not found.stdout.strip().split(".")[0].isdigit() or int(found.stdout.split(".")[0]) < 3:
        pytest.fail(f"{PYTHON_ENV}={python} has no SageMaker SDK v3: {(found.stdout + found.stderr).strip()[-500:]}")
    return python


@pytest.fixture(scope="module")
def v3_python() -> str:
    return _python()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("sdk-v3")
    with running_platform(root / "home", root / "aws") as running:
        yield running


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import numpy as np

    work = tmp_path_factory.mktemp("v3-work")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    np.savetxt(work / "train.csv", np.column_stack([(x[:, 0] > 0).astype(int), x]), delimiter=",", fmt="%.5f")
    return work


def _run(platform: RunningPlatform, python: str, cwd: Path, code: str) -> str:
    return platform.run_python(code, cwd, timeout=600, python=python)


def _values(out: str, key: str) -> list[str]:
    return re.findall(rf"(?:^|[-!]){key} (.*)$", out, re.MULTILINE)


def test_readme_v2_snippet(platform: RunningPlatform, workdir: Path) -> None:
    """The README's v2 snippet (the classic Estimator API) on this interpreter's SDK v2."""
    out = platform.run_python(README_V2_SNIPPET, workdir, timeout=600)
    scores = [float(v) for v in re.split(r"[,\s]+", _values(out, "PREDICTION")[0].strip())]
    assert scores[0] > 0.5 > scores[1]


def test_model_trainer_builtin_xgboost(v3_python: str, platform: RunningPlatform, workdir: Path) -> None:
    """The README's v3 snippet: ModelTrainer with the built-in XGBoost image, then TrainingJob.get."""
    out = _run(platform, v3_python, workdir, README_SNIPPET)
    model = _values(out, "MODEL")[0]
    assert model.endswith("/output/model.tar.gz")
    job = model.split("/")[-3]
    out = _run(
        platform,
        v3_python,
        workdir,
        f"""
        from sagemaker.core.resources import TrainingJob
        job = TrainingJob.get(training_job_name={job!r})
        print("STATUS", job.training_job_status, job.secondary_status)
        print("METRICS", sorted(m.metric_name for m in job.final_metric_data_list))
        print("TRANSITIONS", [t.status for t in job.secondary_status_transitions])
        print("TIMES", type(job.creation_time).__name__, job.training_time_in_seconds > 0)
        print("IMAGE", job.algorithm_specification.training_image)
        """,
    )
    assert _values(out, "STATUS") == ["Completed Completed"]
    assert "train:logloss" in _values(out, "METRICS")[0]
    assert _values(out, "TRANSITIONS")[0].endswith("'Uploading', 'Completed']")
    assert _values(out, "TIMES") == ["datetime True"]


def test_model_trainer_script_mode_then_model_builder(v3_python: str, platform: RunningPlatform, workdir: Path) -> None:
    """ModelTrainer(source_code=SourceCode(requirements=...)) -> ModelBuilder.deploy() -> Endpoint.invoke()."""
    src = workdir / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(textwrap.dedent(SCRIPT))
    (src / "requirements.txt").write_text("scikit-learn\npandas\ntabulate\n")
    code = workdir / "code"
    code.mkdir(exist_ok=True)
    (code / "inference.py").write_text(textwrap.dedent(INFERENCE))
    out = _run(
        platform,
        v3_python,
        workdir,
        """
        from sagemaker.core import image_uris
        from sagemaker.core.helper.session_helper import Session, get_execution_role
        from sagemaker.core.resources import Endpoint, Model
        from sagemaker.serve.model_builder import ModelBuilder
        from sagemaker.train import ModelTrainer
        from sagemaker.train.configs import Compute, InputData, SourceCode

        session = Session()
        image = image_uris.retrieve("sklearn", session.boto_region_name, "1.2-1")
        train = session.upload_data("train.csv", key_prefix="v3/script")
        trainer = ModelTrainer(
            training_image=image,
            role=get_execution_role(),
            source_code=SourceCode(source_dir="src", entry_script="train.py", requirements="requirements.txt"),
            compute=Compute(instance_type="ml.m5.large", instance_count=1),
            hyperparameters={"C": 0.5},
        )
        trainer.train(input_data_config=[InputData(channel_name="train", data_source=train)])
        job = trainer._latest_training_job
        print("JOB", job.training_job_name)
        print("ENTRYPOINT", job.algorithm_specification.container_entrypoint)

        builder = ModelBuilder(
            image_uri=image,
            s3_model_data_url=job.model_artifacts.s3_model_artifacts,
            source_code=SourceCode(source_dir="code", entry_script="inference.py"),
            role_arn=get_execution_role(),
            instance_type="ml.m5.large",
        )
        model = builder.build()
        container = Model.get(model_name=model.model_name).primary_container
        print("SERVING", container.image, sorted(container.environment.items()), container.model_data_url)
        endpoint = builder.deploy(initial_instance_count=1)
        print("ENDPOINT", endpoint.endpoint_name)
        answer = endpoint.invoke(body="3.0,0,0\\n-3.0,0,0", content_type="text/csv", accept="application/json")
        print("PREDICTION", answer.body.read().decode())
        again = Endpoint.get(endpoint_name=endpoint.endpoint_name)
        print("ENDPOINT_STATUS", again.endpoint_status, again.production_variants[0].current_instance_count)
        again.delete()
        """,
    )
    assert "accuracy" in out  # the script's output (tabulate came from requirements.txt)
    assert _values(out, "ENTRYPOINT") == ["['/bin/bash']"]
    # ModelBuilder's pass-through build: the code repacked into the model, the inference toolkit's variables
    serving = _values(out, "SERVING")[0]
    assert "('SAGEMAKER_PROGRAM', 'inference.py')" in serving
    assert "('SAGEMAKER_SUBMIT_DIRECTORY', '/opt/ml/model/code')" in serving
    assert _values(out, "PREDICTION") == ["[1.0, 0.0]"]
    assert _values(out, "ENDPOINT_STATUS") == ["InService 1"]
    # what the job installed stayed in the job: the platform's interpreter has no tabulate
    assert subprocess.run([sys.executable, "-c", "import tabulate"], capture_output=True).returncode != 0


def test_script_failure_names_the_error(v3_python: str, platform: RunningPlatform, workdir: Path) -> None:
    """A failing v3 script: FailureReason carries the script's own error line, not only the driver's traceback."""
    bad = workdir / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "fail.py").write_text("raise ValueError('the data has no label column')\n")
    out = _run(
        platform,
        v3_python,
        workdir,
        """
        from sagemaker.core import image_uris
        from sagemaker.core.helper.session_helper import Session, get_execution_role
        from sagemaker.train import ModelTrainer
        from sagemaker.train.configs import Compute, SourceCode

        session = Session()
        trainer = ModelTrainer(
            training_image=image_uris.retrieve("pytorch", session.boto_region_name, "2.1", py_version="py310",
                                               instance_type="ml.m5.large", image_scope="training"),
            role=get_execution_role(),
            source_code=SourceCode(source_dir="bad", entry_script="fail.py"),
            compute=Compute(instance_type="ml.m5.large", instance_count=1),
        )
        try:
            trainer.train()
        except Exception as exc:
            print("RAISED", type(exc).__name__)
        print("REASON", repr(trainer._latest_training_job.refresh().failure_reason))
        """,
    )
    assert "ValueError: the data has no label column" in _values(out, "REASON")[0]


DISTRIBUTED = """
import os
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(f"rank {dist.get_rank()} of {dist.get_world_size()}: sum {total.item()}")
if dist.get_rank() == 0:
    torch.save({"sum": total.item()}, os.path.join(os.environ["SM_MODEL_DIR"], "model.pt"))
dist.destroy_process_group()
"""


@pytest.mark.parametrize(("nodes", "per_node"), [(1, 2), (2, 1)], ids=["one-instance", "two-instances"])
def test_torchrun_distributed(
    v3_python: str, platform: RunningPlatform, workdir: Path, nodes: int, per_node: int
) -> None:
    """ModelTrainer(distributed=Torchrun(...)): v3's torchrun driver, two ranks on gloo, on one or two instances.

    With two instances the driver runs ``torchrun --master_addr=algo-1``: the hosts resolve by name.
    """
    pytest.importorskip("torch")
    src = workdir / "ddp"
    src.mkdir(exist_ok=True)
    (src / "ddp.py").write_text(textwrap.dedent(DISTRIBUTED))
    out = _run(
        platform,
        v3_python,
        workdir,
        f"""
        from sagemaker.core import image_uris
        from sagemaker.core.helper.session_helper import Session, get_execution_role
        from sagemaker.train import ModelTrainer
        from sagemaker.train.configs import Compute, SourceCode
        from sagemaker.train.distributed import Torchrun

        session = Session()
        trainer = ModelTrainer(
            training_image=image_uris.retrieve("pytorch", session.boto_region_name, "2.1", py_version="py310",
                                               instance_type="ml.m5.large", image_scope="training"),
            role=get_execution_role(),
            source_code=SourceCode(source_dir="ddp", entry_script="ddp.py"),
            distributed=Torchrun(process_count_per_node={per_node}),
            compute=Compute(instance_type="ml.m5.large", instance_count={nodes}),
        )
        trainer.train()
        print("STATUS", trainer._latest_training_job.training_job_status)
        print("JOB", trainer._latest_training_job.training_job_name)
        """,
    )
    assert _values(out, "STATUS") == ["Completed"]
    logs = platform.session().client("logs")
    pages = logs.get_paginator("filter_log_events").paginate(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=_values(out, "JOB")[0]
    )
    lines = [e["message"] for page in pages for e in page["events"]]
    assert any(f"torchrun --nnodes={nodes} --nproc_per_node={per_node}" in line for line in lines), lines[-30:]
    # the two ranks share one stdout, so their prints may interleave within a line
    text = "\n".join(lines)
    assert "rank 0 of 2: sum 3.0" in text and "rank 1 of 2: sum 3.0" in text, lines[-40:]


def test_without_a_mount_namespace_opt_ml_is_rewritten(tmp_path: Path) -> None:
    """Where /opt/ml cannot be mounted: the entrypoint, its arguments, the environment and the drivers' text files."""
    from opensage.contract import SDK_DRIVERS_CHANNEL, Layout, entrypoint_command, rewrite_tree

    layout = Layout(tmp_path / "algo-1")
    drivers = layout.channel_dir(SDK_DRIVERS_CHANNEL)
    (drivers / "scripts").mkdir(parents=True)
    (drivers / "sm_train.sh").write_text("cat /opt/ml/input/config/resourceconfig.json\n")
    (drivers / "scripts" / "environment.py").write_text('SM_MODEL_DIR = "/opt/ml/model"\n')
    (drivers / "blob.bin").write_bytes(b"\xff\xfe/opt/ml/\x00")
    argv, env = entrypoint_command(
        ["/bin/bash"],
        ["-c", "/opt/ml/input/data/sm_drivers/sm_train.sh"],
        {"A": "/opt/ml/model", "B": "x"},
        layout.base,
        mounted=False,
    )
    assert argv == ("/bin/bash", "-c", f"{layout.base}/input/data/sm_drivers/sm_train.sh")
    assert env == {"A": f"{layout.base}/model", "B": "x"}
    assert rewrite_tree(drivers, layout.base) == 2
    assert (drivers / "scripts" / "environment.py").read_text() == f'SM_MODEL_DIR = "{layout.base}/model"\n'
    assert (drivers / "blob.bin").read_bytes() == b"\xff\xfe/opt/ml/\x00"
    mounted = entrypoint_command(["/bin/bash"], ["-c", "/opt/ml/x"], {"A": "/opt/ml/model"}, layout.base, mounted=True)
    assert mounted == (("/bin/bash", "-c", "/opt/ml/x"), {"A": "/opt/ml/model"})
