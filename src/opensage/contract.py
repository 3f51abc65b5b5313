"""SageMaker's container contract: every path and environment variable name in one place.

A container's root is ``/opt/ml`` on SageMaker; here it is ``SAGEMAKER_BASE_DIR`` (the training
toolkit's own variable), so the same code runs with the layout mounted at ``/opt/ml`` or kept in
a job directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
NETWORK_INTERFACE = "eth0"


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
