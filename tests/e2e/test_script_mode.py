"""Script mode end to end: the SDK's framework estimators and models with users' own code."""

from __future__ import annotations

import io
import json
import re
import tarfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow
BUCKET = "script-tests"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

SKLEARN_TRAIN = '''
import argparse, json, os
import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--regularization", type=float, default=1.0)
    parser.add_argument("--model-dir", default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--train", default=os.environ["SM_CHANNEL_TRAIN"])
    args = parser.parse_args()
    data = np.loadtxt(os.path.join(args.train, "train.csv"), delimiter=",")
    model = LogisticRegression(C=args.regularization).fit(data[:, 1:], data[:, 0])
    print("accuracy=%.3f" % model.score(data[:, 1:], data[:, 0]))
    # SageMaker code writes to /opt/ml paths directly, too
    with open("/opt/ml/output/data/env.json", "w") as f:
        json.dump({k: v for k, v in os.environ.items() if k.startswith("SM_")}, f)
    joblib.dump(model, os.path.join(args.model_dir, "model.joblib"))
'''


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("script")
    with running_platform(root / "home", root / "aws") as running:
        running.session().client("s3").create_bucket(Bucket=BUCKET)
        yield running


def _sdk(platform: RunningPlatform, tmp_path: Path, code: str, timeout: float = 300) -> str:
    return platform.run_python(code, tmp_path, timeout)


def _values(out: str, key: str) -> list[str]:
    """What the script printed after ``KEY `` (deploy() prints its progress without a newline)."""
    return re.findall(rf"(?:^|[-!]){key} (.*)$", out, re.MULTILINE)


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def _train_csv(path: Path, rows: int = 200) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3))
    y = (x[:, 0] > 0).astype(int)
    np.savetxt(path, np.column_stack([y, x]), delimiter=",", fmt="%.5f")
    return path


def test_sklearn_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """SKLearn(entry_point=...).fit() -> deploy() -> predict(numpy) -> delete, unchanged SDK v2 code."""
    _write(tmp_path / "src", {"train.py": SKLEARN_TRAIN})
    _train_csv(tmp_path / "train.csv")
    out = _sdk(
        platform,
        tmp_path,
        """
        import numpy as np, sagemaker
        from sagemaker.sklearn import SKLearn
        session = sagemaker.Session()
        train = session.upload_data("train.csv", key_prefix="sklearn/train")
        est = SKLearn(entry_point="train.py", source_dir="src", framework_version="1.2-1", py_version="py3",
                      instance_type="ml.m5.large", role=sagemaker.get_execution_role(),
                      hyperparameters={"regularization": 0.5})
        est.fit({"train": train})
        print("MODEL", est.model_data)
        predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large")
        print("PREDICTION", predictor.predict(np.array([[3.0, 0, 0], [-3.0, 0, 0]])).tolist())
        predictor.delete_endpoint()
        print("DONE", est.latest_training_job.name)
        """,
    )
    assert "accuracy=" in out  # the script's output, streamed by fit(logs=True)
    assert _values(out, "PREDICTION") == ["[1.0, 0.0]"]
    sm = platform.session().client("sagemaker")
    desc = sm.describe_training_job(TrainingJobName=_values(out, "DONE")[0])
    assert desc["HyperParameters"]["sagemaker_program"] == '"train.py"'
    output = desc["ModelArtifacts"]["S3ModelArtifacts"].replace("model.tar.gz", "output.tar.gz")
    bucket, key = output[5:].split("/", 1)
    body = platform.session().client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        env = json.loads(tar.extractfile("env.json").read())  # type: ignore[union-attr]
    assert env["SM_HP_REGULARIZATION"] == "0.5" and json.loads(env["SM_HPS"]) == {"regularization": 0.5}
    assert json.loads(env["SM_USER_ARGS"]) == ["--regularization", "0.5"]
    assert env["SM_USER_ENTRY_POINT"] == "train.py"
    assert json.loads(env["SM_CHANNELS"]) == ["train"] and env["SM_CURRENT_HOST"] == "algo-1"
    assert json.loads(env["SM_TRAINING_ENV"])["hyperparameters"] == {"regularization": 0.5}


PIPE_READER = '''
import os
data = os.path.join(os.environ["SM_INPUT_DIR"], "data")
for epoch in range(2):  # SageMaker's contract: train_0, then train_1 once train_0 has been read to its end
    with open(os.path.join(data, "train_%d" % epoch), "rb") as pipe:
        body = pipe.read()
    print("EPOCH %d BYTES %d LINES %d" % (epoch, len(body), body.count(b"\\n")), flush=True)
print("FILES", sorted(os.listdir(data)))
'''


def test_a_pipe_mode_channel_is_streamed_through_a_fifo_per_epoch(platform: RunningPlatform, tmp_path: Path) -> None:
    """input_mode="Pipe": nothing is downloaded; the script reads train_0 and train_1, each the whole channel."""
    _write(tmp_path / "src", {"train.py": PIPE_READER})
    _train_csv(tmp_path / "train.csv")
    size = (tmp_path / "train.csv").stat().st_size
    out = _sdk(
        platform,
        tmp_path,
        """
        import sagemaker
        from sagemaker.sklearn import SKLearn
        session = sagemaker.Session()
        session.upload_data("train.csv", key_prefix="piped/train")
        session.upload_data("train.csv", key_prefix="piped/train/more")
        est = SKLearn(entry_point="train.py", source_dir="src", framework_version="1.2-1", py_version="py3",
                      instance_type="ml.m5.large", role=sagemaker.get_execution_role(), input_mode="Pipe")
        est.fit({"train": f"s3://{session.default_bucket()}/piped/train"})
        """,
    )
    epochs = re.findall(r"EPOCH (\d) BYTES (\d+)", out)
    assert epochs == [("0", str(2 * size)), ("1", str(2 * size))], out[-2000:]
    (files,) = re.findall(r"FILES (\[.*\])", out)
    assert "train_1" in files and "'train'" not in files, files  # streamed, not downloaded
    assert "is streamed in Pipe mode: 2 objects" in out


INFERENCE = '''
import json, os
import joblib

def model_fn(model_dir):
    if os.environ.get("FAIL_AT_LOAD"):
        raise RuntimeError("the weights are corrupt")
    return joblib.load(os.path.join(model_dir, "model.joblib"))

def input_fn(body, content_type):
    return json.loads(body)["instances"]

def predict_fn(data, model):
    if data == "boom":
        raise ValueError("predict_fn refused the input")
    return model.predict(data)

def output_fn(prediction, accept):
    return json.dumps({"labels": prediction.tolist()}), "application/json"
'''


def test_sklearn_model_trained_elsewhere(platform: RunningPlatform, tmp_path: Path) -> None:
    """SKLearnModel(model_data=..., entry_point='inference.py').deploy(); predict_fn errors are ModelErrors."""
    import joblib
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier().fit(np.array([[0.0], [1.0]]), np.array([0, 1]))
    joblib.dump(model, tmp_path / "model.joblib")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model.joblib", arcname="model.joblib")
    _write(tmp_path / "code", {"inference.py": INFERENCE})
    out = _sdk(
        platform,
        tmp_path,
        """
        import boto3, sagemaker
        from sagemaker.sklearn import SKLearnModel
        from sagemaker.serializers import JSONSerializer
        from sagemaker.deserializers import JSONDeserializer
        session = sagemaker.Session()
        data = session.upload_data("model.tar.gz", key_prefix="elsewhere")
        model = SKLearnModel(model_data=data, role=sagemaker.get_execution_role(), entry_point="inference.py",
                             source_dir="code", framework_version="1.2-1")
        predictor = model.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                 serializer=JSONSerializer(), deserializer=JSONDeserializer())
        print("PREDICTION", predictor.predict({"instances": [[0.9], [0.1]]}))
        runtime = boto3.client("sagemaker-runtime")
        try:
            runtime.invoke_endpoint(EndpointName=predictor.endpoint_name, Body=b'{"instances": "boom"}',
                                    ContentType="application/json")
        except runtime.exceptions.ModelError as exc:
            print("MODEL_ERROR", exc.response["OriginalStatusCode"], exc.response["Error"]["Message"])
        print("AGAIN", predictor.predict({"instances": [[1.0]]}))
        print("ENDPOINT", predictor.endpoint_name)
        print("MODEL", model.name)
        """,
    )
    assert _values(out, "PREDICTION") == ["{'labels': [1, 0]}"]
    error = _values(out, "MODEL_ERROR")[0]
    assert error.startswith("500 ") and "predict_fn refused the input" in error
    assert _values(out, "AGAIN") == ["{'labels': [1]}"]  # the server stayed up

    # the same model with a model_fn that fails at load: the endpoint fails with the traceback's last line
    sm = platform.session().client("sagemaker")
    container = sm.describe_model(ModelName=_values(out, "MODEL")[0])["PrimaryContainer"]
    sm.create_model(
        ModelName="load-fails",
        PrimaryContainer={**container, "Environment": {**container["Environment"], "FAIL_AT_LOAD": "1"}},
        ExecutionRoleArn=sm.describe_model(ModelName=_values(out, "MODEL")[0])["ExecutionRoleArn"],
    )
    sm.create_endpoint_config(
        EndpointConfigName="load-fails",
        ProductionVariants=[
            {"VariantName": "v", "ModelName": "load-fails", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName="load-fails", EndpointConfigName="load-fails")
    desc = _wait_endpoint(platform, "load-fails")
    assert desc["EndpointStatus"] == "Failed"
    assert "RuntimeError: the weights are corrupt" in desc["FailureReason"]
    sm.delete_endpoint(EndpointName="load-fails")
    sm.delete_endpoint(EndpointName=_values(out, "ENDPOINT")[0])


def _wait_endpoint(platform: RunningPlatform, name: str, timeout: float = 120) -> dict[str, Any]:
    sm = platform.session().client("sagemaker")
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        if desc["EndpointStatus"] not in ("Creating", "Updating"):
            return desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.2)


def _job(
    platform: RunningPlatform,
    files: dict[str, str],
    program: str = "train.py",
    *,
    hps: dict[str, str] | None = None,
    isolated: bool = False,
    instances: int = 1,
) -> dict[str, Any]:
    """A script-mode job through boto3 (the source dir uploaded as the SDK does); waits for its end."""
    s3 = platform.session().client("s3")
    sm = platform.session().client("sagemaker")
    name = f"script-{uuid.uuid4().hex[:10]}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for filename, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(filename)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket=BUCKET, Key=f"{name}/source/sourcedir.tar.gz", Body=buffer.getvalue())
    account = platform.session().client("sts").get_caller_identity()["Account"]
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": SKLEARN_IMAGE, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        HyperParameters={
            "sagemaker_program": f'"{program}"',
            "sagemaker_submit_directory": f'"s3://{BUCKET}/{name}/source/sourcedir.tar.gz"',
            **(hps or {}),
        },
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": instances, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 300},
        EnableNetworkIsolation=isolated,
    )
    deadline = time.monotonic() + 240
    while True:
        desc = sm.describe_training_job(TrainingJobName=name)
        if desc["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            return desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.2)


def _log(platform: RunningPlatform, name: str) -> str:
    logs = platform.session().client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)
    lines = []
    for stream in streams["logStreams"]:
        events = logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream["logStreamName"], startFromHead=True
        )
        lines += [e["message"] for e in events["events"]]
    return "\n".join(lines)


def test_script_errors_become_failure_reasons(platform: RunningPlatform) -> None:
    raises = _job(platform, {"train.py": "import sys\nprint('starting')\nraise ValueError('the data has no rows')\n"})
    assert raises["TrainingJobStatus"] == "Failed"
    assert raises["FailureReason"].startswith("AlgorithmError: ExecuteUserScriptError:")
    assert 'ErrorMessage "ValueError: the data has no rows"' in raises["FailureReason"]

    syntax = _job(platform, {"train.py": "def broken(:\n    pass\n"})
    assert syntax["TrainingJobStatus"] == "Failed" and "SyntaxError" in syntax["FailureReason"]

    missing = _job(platform, {"other.py": "print(1)\n"})
    assert missing["TrainingJobStatus"] == "Failed"
    assert "entry point 'train.py' is not in the source directory (other.py)" in missing["FailureReason"]

    failure_file = _job(
        platform,
        {"train.py": "open('/opt/ml/output/failure', 'w').write('the labels are all NaN')\nraise SystemExit(2)"},
    )
    assert failure_file["FailureReason"] == "AlgorithmError: the labels are all NaN"

    shell = _job(platform, {"run.sh": 'echo "shell entry point with $@"\n'}, "run.sh", hps={"epochs": "3"})
    assert shell["TrainingJobStatus"] == "Completed"
    assert "shell entry point with --epochs 3" in _log(platform, shell["TrainingJobName"])


def test_one_failed_instance_fails_the_job_at_once_with_its_own_error(platform: RunningPlatform) -> None:
    """Two instances: algo-2 fails at once while algo-1 would wait for it (as a rendezvous does) for minutes.
    The job fails as soon as algo-2 has, algo-1 stopped, and the reason is algo-2's error."""
    script = """
    import os, sys, time
    if os.environ["SM_CURRENT_HOST"] == "algo-2":
        raise ValueError("algo-2 has no shard to read")
    print("algo-1 waits for its peer", flush=True)
    time.sleep(280)
    print("algo-1 slept through", flush=True)
    """
    desc = _job(platform, {"train.py": script}, instances=2)
    assert desc["TrainingJobStatus"] == "Failed"
    assert 'ErrorMessage "ValueError: algo-2 has no shard to read"' in desc["FailureReason"], desc["FailureReason"]
    log = _log(platform, desc["TrainingJobName"])
    assert "algo-1 slept through" not in log  # (on a busy machine algo-2 may fail before algo-1 prints at all)
    assert (desc["TrainingEndTime"] - desc["TrainingStartTime"]).total_seconds() < 200  # not algo-1's 280 s


def test_requirements_are_installed_and_cached(platform: RunningPlatform) -> None:
    script = "import tabulate\nprint('tabulate', tabulate.__version__)\n"
    files = {"train.py": script, "requirements.txt": "tabulate>=0.9\n"}
    first = _job(platform, files)
    assert first["TrainingJobStatus"] == "Completed", first.get("FailureReason")
    first_log = _log(platform, first["TrainingJobName"])
    assert "into a new environment" in first_log and "tabulate 0." in first_log
    second = _job(platform, files)
    second_log = _log(platform, second["TrainingJobName"])
    assert second["TrainingJobStatus"] == "Completed" and "Using the cached environment" in second_log

    bad = _job(platform, {"train.py": script, "requirements.txt": "this-package-does-not-exist-opensage==1.0\n"})
    assert bad["TrainingJobStatus"] == "Failed"
    assert "InstallRequirementsError" in bad["FailureReason"]
    assert "this-package-does-not-exist-opensage" in bad["FailureReason"]


def test_network_isolation_cuts_the_network(platform: RunningPlatform) -> None:
    script = f"""
    import socket
    try:
        socket.create_connection(("127.0.0.1", {platform.port}), timeout=2).close()
        print("NETWORK reachable")
    except OSError as exc:
        print("NETWORK cut", exc)
    """
    isolated = _job(platform, {"train.py": script}, isolated=True)
    assert "NETWORK cut" in _log(platform, isolated["TrainingJobName"])
    connected = _job(platform, {"train.py": script})
    assert "NETWORK reachable" in _log(platform, connected["TrainingJobName"])


def test_unknown_entry_point_image_without_program(platform: RunningPlatform) -> None:
    sm = platform.session().client("sagemaker")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    sm.create_training_job(
        TrainingJobName="no-program",
        AlgorithmSpecification={"TrainingImage": SKLEARN_IMAGE, "TrainingInputMode": "File"},
        RoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
        OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    deadline = time.monotonic() + 60
    while (desc := sm.describe_training_job(TrainingJobName="no-program"))["TrainingJobStatus"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert desc["TrainingJobStatus"] == "Failed" and "sagemaker_program" in desc["FailureReason"]
    with pytest.raises(ClientError):
        sm.describe_training_job(TrainingJobName="never-created")


TORCH_TRAIN = '''
import argparse, json, os
import torch
import torch.distributed as dist

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, x):
        return self.linear(x)

def model_fn(model_dir):
    net = Net()
    net.load_state_dict(torch.load(os.path.join(model_dir, "model.pth")))
    return net

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")
        print("RANK %d OF %d" % (dist.get_rank(), dist.get_world_size()), flush=True)
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    y = x[:, :1] * 2.0 + x[:, 1:] * -1.0
    net = Net()
    model = torch.nn.parallel.DistributedDataParallel(net) if distributed else net
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(args.epochs):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    print("loss=%.4f" % loss.item(), flush=True)
    if not distributed or dist.get_rank() == 0:
        torch.save(net.state_dict(), os.path.join(os.environ["SM_MODEL_DIR"], "model.pth"))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()  # else gloo's threads may abort the interpreter's exit ("terminate called")
'''


def test_pytorch_fit_deploy_predict_json(platform: RunningPlatform, tmp_path: Path) -> None:
    """PyTorch(...).fit() -> deploy() -> predict() with the JSON serializer (the model repacked with its code)."""
    pytest.importorskip("torch")
    _write(tmp_path / "src", {"train.py": TORCH_TRAIN})
    out = _sdk(
        platform,
        tmp_path,
        """
        import sagemaker
        from sagemaker.pytorch import PyTorch
        from sagemaker.serializers import JSONSerializer
        from sagemaker.deserializers import JSONDeserializer
        est = PyTorch(entry_point="train.py", source_dir="src", framework_version="2.1", py_version="py310",
                      instance_count=1, instance_type="ml.m5.large", role=sagemaker.get_execution_role(),
                      hyperparameters={"epochs": 200})
        est.fit()
        predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                               serializer=JSONSerializer(), deserializer=JSONDeserializer())
        print("PREDICTION", predictor.predict([[1.0, 0.0], [0.0, 1.0]]))
        predictor.delete_endpoint()
        """,
        timeout=400,
    )
    first, second = (row[0] for row in json.loads(_values(out, "PREDICTION")[0]))
    assert abs(first - 2.0) < 0.2 and abs(second + 1.0) < 0.2


def test_pytorch_distributed_two_instances(platform: RunningPlatform, tmp_path: Path) -> None:
    """instance_count=2 with torch_distributed: torchrun-style workers with ranks 0 and 1 train together."""
    pytest.importorskip("torch")
    _write(tmp_path / "src", {"train.py": TORCH_TRAIN})
    out = _sdk(
        platform,
        tmp_path,
        """
        import sagemaker
        from sagemaker import image_uris
        from sagemaker.pytorch import PyTorch
        session = sagemaker.Session()
        image = image_uris.retrieve("pytorch", session.boto_region_name, version="2.1", py_version="py310",
                                    instance_type="ml.m5.xlarge", image_scope="training")
        est = PyTorch(entry_point="train.py", source_dir="src", image_uri=image, instance_count=2,
                      instance_type="ml.m5.xlarge", role=sagemaker.get_execution_role(),
                      distribution={"torch_distributed": {"enabled": True}}, hyperparameters={"epochs": 5})
        est.fit()
        print("MODEL", est.model_data)
        """,
        timeout=400,
    )
    assert "RANK 0 OF 2" in out and "RANK 1 OF 2" in out
    assert _values(out, "MODEL")[0].endswith("/output/model.tar.gz")


TF_TRAIN = '''
import argparse, json, os
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # Keras 2 (tf_keras): Keras 3 has no multi-worker strategy
import numpy as np
import tensorflow as tf

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--model_dir", type=str)
parser.add_argument("--sm-model-dir", type=str, default=os.environ.get("SM_MODEL_DIR"))
args, _ = parser.parse_known_args()
task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
strategy = tf.distribute.MultiWorkerMirroredStrategy() if task else tf.distribute.get_strategy()
print("REPLICAS %d TASK %s MODEL_DIR %s" % (strategy.num_replicas_in_sync, task.get("index"), args.model_dir))
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 2)).astype("float32")
y = (x[:, :1] * 2.0 - x[:, 1:]).astype("float32")
with strategy.scope():
    model = tf.keras.Sequential([tf.keras.Input(shape=(2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.Adam(0.1), loss="mse")
history = model.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)
print("LOSS %.4f" % history.history["loss"][-1], flush=True)
chief = task.get("index", 0) == 0
model.export(os.path.join(args.sm_model_dir, "1") if chief else "/tmp/worker-%s" % task.get("index"))
'''


def test_tensorflow_two_workers_fit_deploy_predict(platform: RunningPlatform, tmp_path: Path) -> None:
    """TensorFlow(...) with MultiWorkerMirroredStrategy on 2 instances, then TensorFlow Serving's REST contract."""
    pytest.importorskip("tensorflow")
    _write(tmp_path / "src", {"train.py": TF_TRAIN})
    out = _sdk(
        platform,
        tmp_path,
        """
        import sagemaker
        from sagemaker.tensorflow import TensorFlow
        est = TensorFlow(entry_point="train.py", source_dir="src", framework_version="2.16", py_version="py310",
                         instance_count=2, instance_type="ml.m5.large", role=sagemaker.get_execution_role(),
                         distribution={"multi_worker_mirrored_strategy": {"enabled": True}},
                         hyperparameters={"epochs": 40})
        est.fit()
        predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large")
        print("PREDICTION", predictor.predict([[1.0, 0.0], [0.0, 1.0]]))
        print("ROWS", predictor.predict({"instances": [[1.0, 1.0]]}))
        import boto3, json
        rt = boto3.client("sagemaker-runtime")
        answer = rt.invoke_endpoint(EndpointName=predictor.endpoint_name, ContentType="text/csv", Body="2,0")
        print("CSV", answer["Body"].read().decode())
        try:
            rt.invoke_endpoint(EndpointName=predictor.endpoint_name, ContentType="application/json",
                               Body=json.dumps({"instances": [[1.0, 2.0, 3.0]]}))
        except rt.exceptions.ModelError as exc:
            print("BAD", exc.response["Error"]["Message"][:300].replace("\\n", " "))
        predictor.delete_endpoint()
        """,
        timeout=600,
    )
    assert "REPLICAS 2 TASK 0" in out and "REPLICAS 2 TASK 1" in out, out[-3000:]
    model_dirs = re.findall(r"REPLICAS 2 TASK \d MODEL_DIR (\S+)", out)
    assert len(model_dirs) == 2 and not any(d.startswith("s3://") for d in model_dirs), model_dirs  # local
    first, second = (row[0] for row in json.loads(_values(out, "PREDICTION")[0].replace("'", '"'))["predictions"])
    assert abs(first - 2.0) < 0.3 and abs(second + 1.0) < 0.3, out[-2000:]
    (only,) = json.loads(_values(out, "ROWS")[0].replace("'", '"'))["predictions"]
    assert abs(only[0] - 1.0) < 0.4
    assert abs(json.loads(_values(out, "CSV")[0])["predictions"][0][0] - 4.0) < 0.5
    assert "error" in _values(out, "BAD")[0]


PS_PROBE = '''
import json, os, socket, time
config = json.loads(os.environ["TF_CONFIG"])
# the master is on the first host, worker i on host i + 2; the ps list follows the hosts: this host's own one
# (another host's ps ends with its host's script, which may be before this one looks)
ps = config["cluster"]["ps"][config["task"]["index"] + 1 if config["task"]["type"] == "worker" else 0]
host, port = ps.rsplit(":", 1)
deadline = time.time() + 240  # TensorFlow's import alone takes tens of seconds on a loaded machine
while True:  # this host's parameter server (tf.distribute.Server) comes up beside the script
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        break
    except OSError:
        assert time.time() < deadline, "no parameter server at " + ps
        time.sleep(0.5)
print("TASK %s %d PS %d" % (config["task"]["type"], config["task"]["index"], len(config["cluster"]["ps"])), flush=True)
'''


def test_tensorflow_parameter_servers_run_beside_the_script(platform: RunningPlatform, tmp_path: Path) -> None:
    """distribution={"parameter_server": ...}: TF_CONFIG with a master and a worker, a ps process on each host."""
    pytest.importorskip("tensorflow")
    _write(tmp_path / "src", {"train.py": PS_PROBE})
    out = _sdk(
        platform,
        tmp_path,
        """
        import sagemaker
        from sagemaker.tensorflow import TensorFlow
        est = TensorFlow(entry_point="train.py", source_dir="src", framework_version="2.16", py_version="py310",
                         instance_count=2, instance_type="ml.m5.large", role=sagemaker.get_execution_role(),
                         distribution={"parameter_server": {"enabled": True}})
        est.fit()
        print("STATUS", est.latest_training_job.describe()["TrainingJobStatus"])
        """,
        timeout=420,
    )
    assert "TASK master 0 PS 2" in out and "TASK worker 0 PS 2" in out, out[-2000:]
    assert _values(out, "STATUS") == ["Completed"]


XGB_TRAIN = '''
import argparse, os
import numpy as np
import xgboost as xgb

def model_fn(model_dir):
    booster = xgb.Booster()
    booster.load_model(os.path.join(model_dir, "xgboost-model"))
    return booster

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_round", type=int, default=10)
    args = parser.parse_args()
    data = np.loadtxt(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"), delimiter=",")
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(data[:, 1:], label=data[:, 0]), args.num_round)
    booster.save_model(os.path.join(os.environ["SM_MODEL_DIR"], "xgboost-model"))
    print("saved after %d rounds" % args.num_round)
'''


def test_xgboost_script_mode_fit_and_serve(platform: RunningPlatform, tmp_path: Path) -> None:
    """XGBoost(entry_point=...) runs the script in the XGBoost image; its model serves through model_fn."""
    _write(tmp_path / "src", {"train.py": XGB_TRAIN})
    _train_csv(tmp_path / "train.csv")
    out = _sdk(
        platform,
        tmp_path,
        """
        import sagemaker
        from sagemaker.xgboost import XGBoost
        session = sagemaker.Session()
        train = session.upload_data("train.csv", key_prefix="xgb-script/train")
        est = XGBoost(entry_point="train.py", source_dir="src", framework_version="1.7-1", instance_count=1,
                      instance_type="ml.m5.large", role=sagemaker.get_execution_role(),
                      hyperparameters={"num_round": 15})
        est.fit({"train": train})
        print("MODEL", est.model_data)
        print("JOB", est.latest_training_job.name)
        """,
    )
    assert "saved after 15 rounds" in out
    sm = platform.session().client("sagemaker")
    job = sm.describe_training_job(TrainingJobName=_values(out, "JOB")[0])
    hps = job["HyperParameters"]
    sm.create_model(
        ModelName="xgb-script",
        PrimaryContainer={
            "Image": job["AlgorithmSpecification"]["TrainingImage"],
            "ModelDataUrl": _values(out, "MODEL")[0],
            "Environment": {
                "SAGEMAKER_PROGRAM": "train.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": json.loads(hps["sagemaker_submit_directory"]),
            },
        },
        ExecutionRoleArn=job["RoleArn"],
    )
    sm.create_endpoint_config(
        EndpointConfigName="xgb-script",
        ProductionVariants=[
            {"VariantName": "v", "ModelName": "xgb-script", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName="xgb-script", EndpointConfigName="xgb-script")
    assert _wait_endpoint(platform, "xgb-script")["EndpointStatus"] == "InService"
    runtime = platform.session().client("sagemaker-runtime")
    answer = runtime.invoke_endpoint(EndpointName="xgb-script", Body=b"3,0,0\n-3,0,0", ContentType="text/csv")
    first, second = (float(v) for v in answer["Body"].read().decode().replace("\n", ",").strip(",").split(","))
    assert first > 0.5 > second
    sm.delete_endpoint(EndpointName="xgb-script")


def test_network_isolation_of_a_model(platform: RunningPlatform, tmp_path: Path) -> None:
    """A model with EnableNetworkIsolation serves through the router, but cannot reach the network itself."""
    probe = f"""
    import socket
    def model_fn(model_dir):
        return None
    def transform_fn(model, body, content_type, accept):
        try:
            socket.create_connection(("127.0.0.1", {platform.port}), timeout=2).close()
            return "reachable", "text/plain"
        except OSError:
            return "cut", "text/plain"
    """
    model_tar = tmp_path / "model.tar.gz"
    with tarfile.open(model_tar, "w:gz") as tar:
        code = _write(tmp_path / "code", {"inference.py": probe})
        tar.add(code / "inference.py", arcname="code/inference.py")
    s3 = platform.session().client("s3")
    s3.upload_file(str(model_tar), BUCKET, "isolated/model.tar.gz")
    sm = platform.session().client("sagemaker")
    runtime = platform.session().client("sagemaker-runtime")
    account = platform.session().client("sts").get_caller_identity()["Account"]
    answers = {}
    for isolated in (True, False):
        name = f"isolated-{str(isolated).lower()}"
        sm.create_model(
            ModelName=name,
            PrimaryContainer={
                "Image": "python:3.11",
                "ModelDataUrl": f"s3://{BUCKET}/isolated/model.tar.gz",
                "Environment": {
                    "SAGEMAKER_PROGRAM": "inference.py",
                    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                },
            },
            ExecutionRoleArn=f"arn:aws:iam::{account}:role/OpenSageExecutionRole",
            EnableNetworkIsolation=isolated,
        )
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {"VariantName": "v", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
            ],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        assert _wait_endpoint(platform, name)["EndpointStatus"] == "InService"
        reply = runtime.invoke_endpoint(EndpointName=name, Body=b"x", ContentType="text/plain")
        answers[isolated] = reply["Body"].read().decode()
        sm.delete_endpoint(EndpointName=name)
    assert answers == {True: "cut", False: "reachable"}
