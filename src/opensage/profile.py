"""The client side of the platform: the AWS config profile, the shell environment, the SDK's files.

``up`` writes ``[profile <name>]`` with a ``services`` section into the AWS config file and the
keys into the credentials file, replacing only its own sections. ``env`` prints the same as
``export`` lines, plus what the SageMaker SDK needs outside botocore's endpoint settings.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from opensage.config import Settings
from opensage.mlflow_servers import MLFLOW_PREFIX

# botocore service ids in snake case -> which listener serves them.
SERVICE_KEYS = {
    "sagemaker": "api",
    "sagemaker_runtime": "api",
    "sts": "api",
    "iam": "api",
    "cloudwatch_logs": "api",
    "cloudwatch": "api",
    "kms": "api",
    "sagemaker_metrics": "api",
    "application_auto_scaling": "api",
    "eventbridge": "api",
    "scheduler": "api",
    "ecr": "api",
    "cognito_identity_provider": "api",
    "s3": "s3",
}


def endpoints(settings: Settings) -> dict[str, str]:
    urls = {"api": settings.api_url, "s3": settings.s3_url}
    return {key: urls[which] for key, which in SERVICE_KEYS.items()}


def env_var_name(service_key: str) -> str:
    return "AWS_ENDPOINT_URL_" + service_key.upper()


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.opensage-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def replace_sections(text: str, blocks: dict[str, str]) -> str:
    """Replace (or append) the INI sections named in ``blocks``, leaving every other line as it was."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            skipping = " ".join(stripped[1:-1].split()) in blocks
        if not skipping:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    for header, body in blocks.items():
        if out:
            out.append("")
        out.append(f"[{header}]")
        out.extend(body.rstrip("\n").splitlines())
    return "\n".join(out) + "\n"


def write_aws_profile(settings: Settings, access_key_id: str, secret: str) -> None:
    """Write (idempotently) the profile, its services section and its credentials."""
    name = settings.profile
    services = "\n".join(f"{key} =\n  endpoint_url = {url}" for key, url in endpoints(settings).items())
    config_path = settings.aws_config_file
    config_text = config_path.read_text() if config_path.exists() else ""
    config_text = replace_sections(
        config_text,
        {
            f"profile {name}": f"region = {settings.region}\noutput = json\nservices = {name}\n",
            f"services {name}": services,
        },
    )
    _atomic_write(config_path, config_text)
    creds_path = settings.aws_credentials_file
    creds_text = creds_path.read_text() if creds_path.exists() else ""
    creds_text = replace_sections(
        creds_text,
        {
            name: f"aws_access_key_id = {access_key_id}\naws_secret_access_key = {secret}\n",
        },
    )
    _atomic_write(creds_path, creds_text)


def sdk_config_yaml(default_bucket: str) -> str:
    """The SageMaker SDK's own config file: no telemetry, the platform's default bucket."""
    return (
        "SchemaVersion: '1.0'\n"
        "SageMaker:\n"
        "  PythonSDK:\n"
        "    Modules:\n"
        "      TelemetryOptOut: true\n"
        "      Session:\n"
        f"        DefaultS3Bucket: {default_bucket}\n"
    )


def sdk_config_path(settings: Settings) -> Path:
    return settings.home / "client" / "sagemaker-config.yaml"


def ca_bundle_path(settings: Settings) -> Path:
    return settings.home / "tls" / "ca-bundle.pem"


def write_sdk_config(settings: Settings, default_bucket: str) -> Path:
    path = sdk_config_path(settings)
    _atomic_write(path, sdk_config_yaml(default_bucket), 0o644)
    return path


def shell_env(settings: Settings, sdk_proxy: bool = True) -> dict[str, str]:
    """The variables ``opensage env`` exports.

    ``sdk_proxy`` adds ``HTTPS_PROXY`` (see :mod:`opensage.sdkproxy`) so that the SageMaker SDK's
    own STS calls reach the platform.
    """
    env = {"AWS_PROFILE": settings.profile}
    if settings.aws_config_file != Path.home() / ".aws" / "config":
        env["AWS_CONFIG_FILE"] = str(settings.aws_config_file)
    if settings.aws_credentials_file != Path.home() / ".aws" / "credentials":
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(settings.aws_credentials_file)
    env["AWS_DEFAULT_REGION"] = settings.region
    for key, url in endpoints(settings).items():
        env[env_var_name(key)] = url
    env["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(sdk_config_path(settings))
    env["OPENSAGE_REGISTRY"] = settings.registry_host  # the container registry: docker login / skopeo copy to it
    # where the sagemaker-mlflow plugin sends an MLflow client's requests (tracking URI = a tracking server's ARN)
    env["SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT"] = settings.api_url + MLFLOW_PREFIX
    if sdk_proxy:
        from opensage.sdkproxy import no_proxy_hosts

        no_proxy = no_proxy_hosts([settings.host] if settings.host not in ("0.0.0.0", "::") else [])
        env.update(
            {
                "AWS_CA_BUNDLE": str(ca_bundle_path(settings)),
                "HTTPS_PROXY": settings.proxy_url,
                "https_proxy": settings.proxy_url,
                "NO_PROXY": no_proxy,
                "no_proxy": no_proxy,
            }
        )
    return env


def export_lines(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
