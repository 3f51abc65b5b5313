"""SageMaker's container contract: every path and environment variable name in one place.

A container's root is ``/opt/ml`` on SageMaker; here it is ``SAGEMAKER_BASE_DIR`` (the training
toolkit's own variable), so the same code runs with the layout mounted at ``/opt/ml`` or kept in
a job directory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
CONTAINER_ROOT = DEFAULT_BASE_DIR
# The channel in which SageMaker Python SDK v3's ModelTrainer ships its own container drivers
# (``sm_train.sh``, ``scripts/environment.py``, ``distributed_drivers/``, ``sourcecode.json``,
# ``distributed.json``); they hard-code ``/opt/ml`` paths, which the platform rewrites in them
# where ``/opt/ml`` cannot be mounted.
SDK_DRIVERS_CHANNEL = "sm_drivers"
NETWORK_INTERFACE = "eth0"

# File names under ``input/config`` (the training toolkit's environment.py), plus the checkpoint
# configuration SageMaker writes there when a job has a CheckpointConfig (``{"LocalPath": ...}``).
HYPERPARAMETERS_FILE = "hyperparameters.json"
INPUT_DATA_CONFIG_FILE = "inputdataconfig.json"
RESOURCE_CONFIG_FILE = "resourceconfig.json"
CHECKPOINT_CONFIG_FILE = "checkpointconfig.json"
# Marker files under ``output``: ``failure`` holds why a job failed (the platform makes its start the
# FailureReason); ``success`` is written when training succeeds.
FAILURE_FILE = "failure"
SUCCESS_FILE = "success"

# Keys of ``inputdataconfig.json`` (one object per channel), ``resourceconfig.json`` and
# ``checkpointconfig.json``.
CHANNEL_CONTENT_TYPE = "ContentType"
CHANNEL_INPUT_MODE = "TrainingInputMode"
CHANNEL_DISTRIBUTION = "S3DistributionType"
CHANNEL_RECORD_WRAPPER = "RecordWrapperType"
CHANNEL_COMPRESSION = "CompressionType"
RESOURCE_CURRENT_HOST = "current_host"
RESOURCE_HOSTS = "hosts"
RESOURCE_NETWORK_INTERFACE = "network_interface_name"
RESOURCE_INSTANCE_TYPE = "current_instance_type"
RESOURCE_GROUP = "current_group_name"
RESOURCE_INSTANCE_GROUPS = "instance_groups"
INSTANCE_GROUP = "homogeneousCluster"
# A processing container's ``/opt/ml/config``: the CreateProcessingJob request and the resource config.
PROCESSING_CONFIG_DIR = "config"
PROCESSING_JOB_CONFIG_FILE = "processingjobconfig.json"
CHECKPOINT_LOCAL_PATH = "LocalPath"
CHECKPOINT_S3_URI = "S3Uri"

# Environment variables of the training toolkit that built-in images read.
NUM_CPUS_ENV = "SM_NUM_CPUS"
NUM_GPUS_ENV = "SM_NUM_GPUS"
CURRENT_INSTANCE_TYPE_ENV = "SM_CURRENT_INSTANCE_TYPE"
# Serving-time variables of SageMaker's model containers.
BATCH_ENV = "SAGEMAKER_BATCH"
PROGRAM_ENV = "SAGEMAKER_PROGRAM"
SUBMIT_DIRECTORY_ENV = "SAGEMAKER_SUBMIT_DIRECTORY"
BIND_TO_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
INFERENCE_OUTPUT_ENV = "SAGEMAKER_INFERENCE_OUTPUT"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
# Multi-model endpoints: a container started with SAGEMAKER_MULTI_MODEL=true loads no model at start and
# answers the /models routes (load, list, describe, unload, invoke); the platform downloads each target's
# artifact to /opt/ml/models/<name>/model and passes the request's TargetModel on in this header.
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"
MULTI_MODEL_DIR = "models"
TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"

# OpenSage's own variables. For multi-host jobs whose hosts share one machine: a JSON object of
# host -> address (``{"algo-1": "127.0.0.1", ...}``) and the port of the first host's tracker
# (XGBoost's collective). And the tag of the job's image URI ("1.7-1"), for images whose behaviour
# depends on the version.
HOST_ADDRESSES_ENV = "OPENSAGE_HOST_ADDRESSES"
TRACKER_PORT_ENV = "OPENSAGE_TRACKER_PORT"
# Two free ports per host (``{"algo-1": [p, q], ...}``) for frameworks whose cluster names a port per
# task (TensorFlow's TF_CONFIG: the worker's, and a parameter server's).
HOST_PORTS_ENV = "OPENSAGE_HOST_PORTS"
IMAGE_TAG_ENV = "OPENSAGE_IMAGE_TAG"
IMAGE_ENV = "OPENSAGE_IMAGE"
# A model server without a network listens on this Unix socket instead of SAGEMAKER_BIND_TO_PORT.
BIND_TO_SOCKET_ENV = "OPENSAGE_BIND_TO_SOCKET"
# Where jobs' requirements.txt environments are cached (``images/framework/environments.py``).
ENV_CACHE_ENV = "OPENSAGE_ENV_CACHE"


@dataclass(frozen=True, slots=True)
class Layout:
    """The ``/opt/ml`` tree of one container."""

    base: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Layout:
        env = os.environ if env is None else env
        return cls(Path(env.get(BASE_DIR_ENV, DEFAULT_BASE_DIR)))

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def data_dir(self) -> Path:
        return self.base / "input" / "data"

    def channel_dir(self, channel: str) -> Path:
        return self.data_dir / channel

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def checkpoint_config_file(self) -> Path:
        return self.config_dir / CHECKPOINT_CONFIG_FILE

    @property
    def success_file(self) -> Path:
        return self.output_dir / SUCCESS_FILE

    @property
    def output_intermediate_dir(self) -> Path:
        return self.output_dir / "intermediate"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.base / "output" / "data"

    @property
    def failure_file(self) -> Path:
        return self.base / "output" / "failure"

    @property
    def checkpoints_dir(self) -> Path:
        return self.base / "checkpoints"

    @property
    def code_dir(self) -> Path:
        return self.base / "code"

    def create(self) -> None:
        for d in (self.config_dir, self.data_dir, self.model_dir, self.output_data_dir, self.checkpoints_dir):
            d.mkdir(parents=True, exist_ok=True)

    def read_json(self, path: Path) -> Any:
        return json.loads(path.read_text()) if path.exists() else {}


def resource_config(current_host: str, hosts: Sequence[str], instance_type: str) -> dict[str, Any]:
    """``resourceconfig.json`` of one container of a job on ``hosts`` (training and processing alike)."""
    return {
        RESOURCE_CURRENT_HOST: current_host,
        RESOURCE_HOSTS: list(hosts),
        RESOURCE_NETWORK_INTERFACE: NETWORK_INTERFACE,
        RESOURCE_INSTANCE_TYPE: instance_type,
        RESOURCE_GROUP: INSTANCE_GROUP,
        RESOURCE_INSTANCE_GROUPS: [
            {"instance_group_name": INSTANCE_GROUP, "instance_type": instance_type, "hosts": list(hosts)}
        ],
    }


def process_env(base: Path, search_path: str, envs_dir: Path) -> dict[str, str]:
    """What every job's container process gets: unbuffered output, the image's PATH, a HOME and TMPDIR
    of its own under ``base``, and the shared caches for requirements environments and pip downloads."""
    return {
        "PYTHONUNBUFFERED": "1",
        "PATH": search_path,
        "HOME": str(base),
        "TMPDIR": str(base),
        ENV_CACHE_ENV: str(envs_dir),
        "PIP_CACHE_DIR": str(envs_dir / "pip-cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def training_env(
    layout: Layout,
    *,
    current_host: str,
    hosts: list[str],
    hyperparameters: Mapping[str, str],
    channels: Mapping[str, Mapping[str, Any]],
    job_name: str,
    num_cpus: int,
    num_gpus: int = 0,
    module_dir: str = "",
    user_entry_point: str = "",
) -> dict[str, str]:
    """The ``SM_*`` variables of the sagemaker-training-toolkit, pointing into ``layout``."""

    def dump(value: Any) -> str:
        return json.dumps(value)

    env = {
        BASE_DIR_ENV: str(layout.base),
        "SM_MODEL_DIR": str(layout.model_dir),
        "SM_INPUT_DIR": str(layout.input_dir),
        "SM_INPUT_CONFIG_DIR": str(layout.config_dir),
        "SM_INPUT_DATA_CONFIG": dump(dict(channels)),
        "SM_OUTPUT_DIR": str(layout.output_dir),
        "SM_OUTPUT_DATA_DIR": str(layout.output_data_dir),
        "SM_OUTPUT_INTERMEDIATE_DIR": str(layout.output_dir / "intermediate"),
        "SM_CHANNELS": dump(sorted(channels)),
        "SM_HPS": dump(dict(hyperparameters)),
        "SM_HOSTS": dump(hosts),
        "SM_CURRENT_HOST": current_host,
        "SM_CURRENT_INSTANCE_TYPE": "",
        "SM_NETWORK_INTERFACE_NAME": NETWORK_INTERFACE,
        "SM_NUM_CPUS": str(num_cpus),
        "SM_NUM_GPUS": str(num_gpus),
        "SM_NUM_NEURONS": "0",
        "SM_LOG_LEVEL": "20",
        "SM_MODULE_NAME": Path(user_entry_point).stem if user_entry_point else "",
        "SM_MODULE_DIR": module_dir,
        "SM_USER_ENTRY_POINT": user_entry_point,
        "SM_FRAMEWORK_MODULE": "",
        "SM_TRAINING_ENV": dump(
            {
                "job_name": job_name,
                "current_host": current_host,
                "hosts": hosts,
                "hyperparameters": dict(hyperparameters),
                "channel_input_dirs": {c: str(layout.channel_dir(c)) for c in channels},
                "model_dir": str(layout.model_dir),
                "output_data_dir": str(layout.output_data_dir),
                "num_cpus": num_cpus,
                "num_gpus": num_gpus,
            }
        ),
        "TRAINING_JOB_NAME": job_name,
    }
    for channel in channels:
        env[f"SM_CHANNEL_{channel.upper()}"] = str(layout.channel_dir(channel))
    for key, value in hyperparameters.items():
        env[f"SM_HP_{key.upper().replace('-', '_')}"] = str(value)
    return env


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*)$")


def error_message(lines: list[str]) -> str:
    """The script's last error line (``ValueError: ...``), else its last line of stderr."""
    for line in reversed(lines):
        m = _ERROR_LINE.match(line.strip())
        if m and not line.strip().startswith(("Traceback", "During handling")):
            return m.group(1)
    return lines[-1].strip() if lines else ""


def rewrite_root(value: str, base: Path) -> str:
    """``/opt/ml/...`` in an argument or variable, pointed at ``base`` (for when /opt/ml is not mounted)."""
    return value.replace(CONTAINER_ROOT + "/", f"{base}/") if CONTAINER_ROOT + "/" in value else value


def entrypoint_command(
    entrypoint: Sequence[str],
    arguments: Sequence[str],
    env: Mapping[str, str],
    base: Path,
    mounted: bool,
) -> tuple[tuple[str, ...], dict[str, str]]:
    """A job's ``ContainerEntrypoint`` + ``ContainerArguments`` and environment, as the container runs them.

    Where ``/opt/ml`` is not mounted, ``/opt/ml`` in the command and in every variable is rewritten
    to ``base``, the container's directory.
    """
    argv = [*entrypoint, *arguments]
    if mounted:
        return tuple(argv), dict(env)
    return tuple(rewrite_root(a, base) for a in argv), {k: rewrite_root(v, base) for k, v in env.items()}


def rewrite_tree(directory: Path, base: Path) -> int:
    """``/opt/ml`` rewritten to ``base`` in the text files under ``directory``; returns how many changed."""
    changed = 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else []:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        rewritten = text.replace(CONTAINER_ROOT + "/", f"{base}/")
        if rewritten != text:
            path.write_text(rewritten)
            changed += 1
    return changed


# What a failure file says when the code that wrote it knew only that a command failed: the SDK v3
# drivers write their own subprocess traceback, or a pointer to CloudWatch, there.
_NO_ERROR_OF_ITS_OWN = re.compile(r"^Traceback \(most recent call last\)|CalledProcessError|see CloudWatch logs", re.M)


def names_no_error(failure: str) -> bool:
    """Whether a failure file holds no error of the user's code (the log's last error line is added)."""
    return bool(_NO_ERROR_OF_ITS_OWN.search(failure))
