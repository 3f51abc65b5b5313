"""The training toolkit: run the user's entry point as SageMaker's framework containers do.

``python -m opensage.images.framework train`` inside a training container. The platform has
unpacked the job's ``sourcedir.tar.gz`` into the code directory; this installs its
``requirements.txt`` (:mod:`.environments`), sets the toolkit's ``SM_*`` variables with the decoded
hyperparameters, and runs ``sagemaker_program`` (a Python script, a shell script, or a module)
with the user's hyperparameters as ``--key value`` arguments. Distributed PyTorch
(``torch_distributed`` / ``pytorchddp``) runs the script under ``torch.distributed.run``;
TensorFlow's ``model_dir`` and distributions are :mod:`.tfdist`'s. A failure
is written to ``output/failure`` in the toolkit's ``ExecuteUserScriptError`` form.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opensage.contract import error_message
from opensage.images.framework import environments, tfdist

# Hyperparameters that configure the toolkit rather than the user's script.
PROGRAM, SUBMIT_DIR, LOG_LEVEL = "sagemaker_program", "sagemaker_submit_directory", "sagemaker_container_log_level"
TORCH_DISTRIBUTED = ("sagemaker_torch_distributed_enabled", "sagemaker_pytorch_ddp_enabled")


class ToolkitError(Exception):
    """The job cannot run; the message is its FailureReason."""


def decode(value: Any) -> Any:
    """A hyperparameter as the toolkit reads it: JSON when it parses, else the string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def to_cmd_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """``--key value`` pairs, keys sorted, dicts as ``k=v,k=v`` (the toolkit's ``to_cmd_args``)."""
    args = []
    for name in sorted(hyperparameters):
        value = hyperparameters[name]
        args.append(f"--{name}" if len(name) > 1 else f"-{name}")
        if isinstance(value, Mapping):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append(str(value))
    return args


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def toolkit_env(env: Mapping[str, str], user: Mapping[str, Any], framework: Mapping[str, Any]) -> dict[str, str]:
    """The toolkit's variables for the user's process, from the platform's ``SM_*`` set."""
    program = str(framework.get(PROGRAM, ""))
    out = {k: v for k, v in env.items() if not k.startswith("SM_HP_")}
    training_env = json.loads(env.get("SM_TRAINING_ENV") or "{}")
    out.update(
        {
            "SM_HPS": json.dumps(dict(user)),
            "SM_USER_ARGS": json.dumps(to_cmd_args(user)),
            "SM_FRAMEWORK_PARAMS": json.dumps(dict(framework)),
            "SM_USER_ENTRY_POINT": program,
            "SM_MODULE_NAME": Path(program).stem if program.endswith((".py", ".sh")) else program,
            "SM_MODULE_DIR": str(framework.get(SUBMIT_DIR, "")),
            "SM_LOG_LEVEL": str(framework.get(LOG_LEVEL, 20)),
        }
    )
    for name, value in user.items():
        out[f"SM_HP_{name.upper().replace('-', '_')}"] = _env_value(value)
    training_env.update(
        hyperparameters=dict(user),
        additional_framework_parameters={k: v for k, v in framework.items() if k not in (PROGRAM, SUBMIT_DIR)},
        user_entry_point=program,
        module_name=out["SM_MODULE_NAME"],
        module_dir=out["SM_MODULE_DIR"],
        log_level=int(out["SM_LOG_LEVEL"]) if out["SM_LOG_LEVEL"].isdigit() else 20,
    )
    out["SM_TRAINING_ENV"] = json.dumps(training_env)
    return out


def _command(python: str, code_dir: Path, program: str, args: list[str], distributed: bool) -> list[str]:
    if program.endswith(".sh"):
        return ["/bin/sh", str(code_dir / program), *args]
    target = [str(code_dir / program)] if program.endswith(".py") else ["-m", program]
    if not distributed:
        return [python, *target, *args]
    hosts = json.loads(os.environ.get("SM_HOSTS") or '["algo-1"]')
    current = os.environ.get("SM_CURRENT_HOST", hosts[0])
    addresses = json.loads(os.environ.get("OPENSAGE_HOST_ADDRESSES") or "{}")
    per_node = max(1, int(os.environ.get("SM_NUM_GPUS") or 0))
    return [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={len(hosts)}",
        f"--nproc_per_node={per_node}",
        f"--node_rank={hosts.index(current)}",
        f"--master_addr={addresses.get(hosts[0], '127.0.0.1')}",
        f"--master_port={os.environ.get('OPENSAGE_TRACKER_PORT', '29500')}",
        *target,
        *args,
    ]


def _run_streaming(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, list[str]]:
    """Run ``argv`` with its output passed through; returns the exit code and its last stderr lines."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    tail: deque[str] = deque(maxlen=50)

    def pump() -> None:
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            sys.stderr.buffer.write(raw)
            sys.stderr.buffer.flush()
            line = raw.decode("utf-8", "replace").rstrip()
            if line.strip():
                tail.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code = proc.wait()
    reader.join(timeout=5)
    return code, list(tail)


def train() -> int:
    base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    config = base / "input" / "config"
    failure = base / "output" / "failure"
    code_dir = base / "code"
    raw = json.loads((config / "hyperparameters.json").read_text())
    decoded = {k: decode(v) for k, v in raw.items()}
    framework = {k: v for k, v in decoded.items() if k.startswith("sagemaker_")}
    user = {k: v for k, v in decoded.items() if not k.startswith("sagemaker_")}
    program = str(framework.get(PROGRAM, ""))
    try:
        if not program:
            raise ToolkitError(
                f"ClientError: the image '{os.environ.get('OPENSAGE_IMAGE', '')}' runs your own code: give the job "
                "an entry point (the sagemaker_program hyperparameter, e.g. entry_point='train.py' in the SDK)."
            )
        if program.endswith((".py", ".sh")) and not (code_dir / program).is_file():
            present = sorted(p.name for p in code_dir.iterdir()) if code_dir.exists() else []
            raise ToolkitError(
                f"ClientError: the entry point '{program}' is not in the source directory "
                f"({', '.join(present) or 'empty'})."
            )
        python = sys.executable
        requirements = code_dir / "requirements.txt"
        if requirements.exists():
            try:
                python = str(environments.ensure(requirements, lambda m: print(m, flush=True)))
            except environments.RequirementsError as exc:
                raise ToolkitError(f"ClientError: InstallRequirementsError: requirements.txt: {exc}") from exc
        if (code_dir / "setup.py").exists() and not program.endswith((".py", ".sh")):
            subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(code_dir)], check=False)
    except ToolkitError as exc:
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(str(exc))
        print(str(exc), file=sys.stderr)
        return 1
    distributed = any(str(framework.get(flag, "")).lower() == "true" for flag in TORCH_DISTRIBUTED)
    tensorflow = tfdist.Distribution(framework, os.environ, python) if tfdist.applies() else None
    if tensorflow is not None:
        tfdist.local_model_dir(user, os.environ)
    args = to_cmd_args(user)
    argv = _command(python, code_dir, program, args, distributed)
    env = toolkit_env(os.environ, user, framework)
    if tensorflow is not None:
        tensorflow.script_env(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code_dir), env.get("PYTHONPATH", "")) if p)
    if python != sys.executable:  # the requirements' environment: its python (and pip) first on PATH
        env["PATH"] = os.pathsep.join(p for p in (str(Path(python).parent), env.get("PATH", "")) if p)
    print(f"Invoking user script: {shlex.join(argv)}", flush=True)
    if tensorflow is not None:
        tensorflow.start(env)
    try:
        code, tail = _run_streaming(argv, env, code_dir)
    finally:
        if tensorflow is not None:
            tensorflow.finish()
    if code == 0:
        return 0
    if not (failure.exists() and failure.read_text().strip()):
        message = error_message(tail) or f"the script exited with code {code}"
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(
            f'AlgorithmError: ExecuteUserScriptError:\nExitCode {code}\nErrorMessage "{message}"\n'
            f'Command "{shlex.join(argv)}", exit code: {code}'
        )
    return code if code > 0 else 1
