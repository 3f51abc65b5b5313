"""Every path, file and variable a notebook instance sees, in one place.

An instance's directory ``<home>/notebooks/<name>/`` holds:

* ``SageMaker/``: the volume, kept across stop and start, at ``/home/ec2-user/SageMaker`` inside the
  instance where mount namespaces allow (else the kernels work in this directory itself);
* ``home/``: the user's home (``/home/ec2-user``), JupyterLab's settings and the IPython profile;
* ``metadata/resource-metadata.json``: at ``/opt/ml/metadata``, what the SDK's
  ``get_execution_role()`` reads (``ExecutionRoleArn``, ``ResourceName``);
* ``aws/``: the instance's own AWS config and credentials files (the platform's key, never the user's
  other profiles) and the SageMaker SDK's configuration file, so that boto3 and the SDK reach this
  platform with no set-up, as ``opensage env`` arranges in a shell;
* ``logs/``: what the lifecycle scripts, ``git clone`` and JupyterLab print.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from opensage.compute import sandbox
from opensage.config import Settings
from opensage.profile import ca_bundle_path, replace_sections, sdk_config_path, shell_env

VOLUME_PATH = "/home/ec2-user/SageMaker"  # where SageMaker mounts the instance's EBS volume
HOME_PATH = "/home/ec2-user"
METADATA_DIR = "/opt/ml/metadata"
METADATA_FILE = "resource-metadata.json"
LOG_GROUP = "/aws/sagemaker/NotebookInstances"
SCRIPT_STREAMS = {"OnCreate": "LifecycleConfigOnCreate", "OnStart": "LifecycleConfigOnStart"}
JUPYTER_STREAM = "jupyter.log"
ENDPOINT_PREFIX = "AWS_ENDPOINT_URL_"
TOKEN_ENV = "JUPYTER_TOKEN"  # jupyter_server reads its token from here (never on the command line)


@dataclass(frozen=True, slots=True)
class ClientSetup:
    """What a kernel needs to reach the platform: ``opensage env``'s variables and the files they name."""

    env: dict[str, str]
    access_key_id: str
    secret_access_key: str
    profile: str
    region: str
    sdk_config: Path | None = None  # the SDK's configuration file written by ``opensage up``
    ca_bundle: Path | None = None  # the CA bundle that trusts the platform's STS listener


def client_setup(settings: Settings, access_key_id: str, secret_access_key: str) -> ClientSetup:
    """The client side of ``settings`` for notebook instances, with the platform's key."""
    return ClientSetup(
        shell_env(settings),
        access_key_id,
        secret_access_key,
        settings.profile,
        settings.region,
        sdk_config_path(settings),
        ca_bundle_path(settings),
    )


@dataclass(frozen=True, slots=True)
class InstanceDirs:
    """The directories of one notebook instance (host paths)."""

    root: Path

    @property
    def volume(self) -> Path:
        return self.root / "SageMaker"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def aws(self) -> Path:
        return self.root / "aws"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def make(self) -> None:
        for path in (self.volume, self.home, self.metadata, self.aws, self.logs):
            path.mkdir(parents=True, exist_ok=True)

    def mounts(self) -> tuple[tuple[Path, str], ...]:
        """(host directory, path inside): the home first, so that the volume is bound inside it."""
        return ((self.home, HOME_PATH), (self.volume, VOLUME_PATH), (self.metadata, METADATA_DIR))

    def inside(self) -> tuple[str, str]:
        """(working directory, home) as the instance's processes see them."""
        if sandbox.mounts_available():
            return VOLUME_PATH, HOME_PATH
        return str(self.volume), str(self.home)


def write_metadata(dirs: InstanceDirs, arn: str, name: str, role_arn: str) -> None:
    """``resource-metadata.json`` as a notebook instance has it (what ``get_execution_role`` reads)."""
    body = {"ResourceArn": arn, "ResourceName": name, "ExecutionRoleArn": role_arn}
    _write(dirs.metadata / METADATA_FILE, json.dumps(body, indent=2) + "\n", dirs.root)


def write_client_files(dirs: InstanceDirs, client: ClientSetup) -> dict[str, str]:
    """The instance's own AWS and SDK files; returns the variables that point at them.

    The config file has ``opensage env``'s profile (its ``services`` section names the platform's
    endpoints) and the credentials file the platform's key only, never the user's other profiles."""
    config, credentials = dirs.aws / "config", dirs.aws / "credentials"
    services = "\n".join(
        f"{var.removeprefix(ENDPOINT_PREFIX).lower()} =\n  endpoint_url = {url}"
        for var, url in client.env.items()
        if var.startswith(ENDPOINT_PREFIX)
    )
    name = client.profile
    blocks = {
        f"profile {name}": f"region = {client.region}\noutput = json\nservices = {name}\n",
        f"services {name}": services,
    }
    _write(config, replace_sections("", blocks), dirs.root)
    keys = f"aws_access_key_id = {client.access_key_id}\naws_secret_access_key = {client.secret_access_key}\n"
    _write(credentials, replace_sections("", {name: keys}), dirs.root)
    env = dict(client.env)
    env.update(AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    for source, file, var in (
        (client.sdk_config, "sagemaker-config.yaml", "SAGEMAKER_USER_CONFIG_OVERRIDE"),
        (client.ca_bundle, "ca-bundle.pem", "AWS_CA_BUNDLE"),
    ):
        if source is not None and source.is_file():
            _write(dirs.aws / file, source.read_text(), dirs.root)
            env[var] = str(dirs.aws / file)
        else:
            env.pop(var, None)
    if "AWS_CA_BUNDLE" in env:  # the public CAs and the platform's own: git clones from either
        env["GIT_SSL_CAINFO"] = env["AWS_CA_BUNDLE"]
    return env


def _write(path: Path, text: str, owner_of: Path, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    _own_like(path, owner_of)


def _own_like(path: Path, owner_of: Path) -> None:
    """Give ``path`` the owner of the instance's directory (the container's user, once it took it)."""
    st = owner_of.stat()
    if os.geteuid() == 0 and (path.stat().st_uid, path.stat().st_gid) != (st.st_uid, st.st_gid):
        os.chown(path, st.st_uid, st.st_gid)


def instance_env(dirs: InstanceDirs, client_env: Mapping[str, str], name: str) -> dict[str, str]:
    """The variables of every process of the instance (lifecycle scripts, JupyterLab, its kernels)."""
    cwd, home = dirs.inside()
    bindir = str(Path(sys.executable).parent)
    env = {
        "PATH": os.pathsep.join(dict.fromkeys([bindir, "/usr/local/bin", "/usr/bin", "/bin"])),
        "HOME": home,
        "USER": "ec2-user",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "GIT_TERMINAL_PROMPT": "0",  # a clone that needs a password fails instead of waiting
        "JUPYTER_CONFIG_DIR": f"{home}/.jupyter",
        "JUPYTER_DATA_DIR": f"{home}/.local/share/jupyter",
        "JUPYTER_RUNTIME_DIR": f"{home}/.local/share/jupyter/runtime",
        "IPYTHONDIR": f"{home}/.ipython",
        "NOTEBOOK_INSTANCE_NAME": name,
        "SAGEMAKER_WORKING_DIR": cwd,
        **client_env,
    }
    return env


def jupyter_argv(base_url: str, port: int, root_dir: str) -> list[str]:
    """JupyterLab, offline: no update checks, no news, a read-only extension manager, loopback only."""
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.base_url={base_url}",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.allow_remote_access=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]


def jupyter_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("jupyterlab") is not None


def git_available() -> bool:
    return shutil.which("git") is not None
