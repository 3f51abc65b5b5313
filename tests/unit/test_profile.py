"""The AWS profile writer and the shell environment."""

from __future__ import annotations

from pathlib import Path

import botocore.session

from opensage.aws.specs import SERVED_SERVICES
from opensage.config import load_settings
from opensage.profile import replace_sections, shell_env, write_aws_profile


def test_replace_sections_keeps_everything_else() -> None:
    text = "# mine\n[default]\nregion = eu-west-1\n\n[profile opensage]\nregion = old\n\n[profile x]\na = 1\n"
    out = replace_sections(text, {"profile opensage": "region = new\n"})
    assert out.startswith("# mine\n[default]\nregion = eu-west-1\n")
    assert "[profile x]\na = 1" in out and "region = old" not in out
    assert out.count("[profile opensage]") == 1 and out.endswith("[profile opensage]\nregion = new\n")
    assert replace_sections(out, {"profile opensage": "region = new\n"}) == out  # idempotent


def test_written_profile_is_what_botocore_reads(tmp_path: Path) -> None:
    settings = load_settings(
        env={"AWS_CONFIG_FILE": str(tmp_path / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")},
        home=str(tmp_path / "home"),
        port=9100,
    )
    write_aws_profile(settings, "AKIAEXAMPLE", "secret")
    session = botocore.session.Session(profile="opensage")
    session.set_config_variable("config_file", str(tmp_path / "config"))
    session.set_config_variable("credentials_file", str(tmp_path / "credentials"))
    creds = session.get_credentials()
    assert (creds.access_key, creds.secret_key) == ("AKIAEXAMPLE", "secret")
    for service, port in [
        ("sagemaker", 9100),
        ("sagemaker-runtime", 9100),
        ("sts", 9100),
        ("iam", 9100),
        ("logs", 9100),
        ("cloudwatch", 9100),
        ("kms", 9100),
        ("s3", 9101),
    ]:
        client = session.create_client(service, region_name="us-east-1")
        assert client.meta.endpoint_url == f"http://127.0.0.1:{port}", service
    assert (tmp_path / "config").stat().st_mode & 0o777 == 0o600


def test_every_served_service_is_routed_to_the_platform(tmp_path: Path) -> None:
    """Profile and shell: every service the API serves (or answers NotImplemented for) reaches OpenSage."""
    settings = load_settings(
        env={"AWS_CONFIG_FILE": str(tmp_path / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")},
        home=str(tmp_path / "home"),
        port=9300,
    )
    write_aws_profile(settings, "AKIAEXAMPLE", "secret")
    session = botocore.session.Session(profile="opensage")
    session.set_config_variable("config_file", str(tmp_path / "config"))
    session.set_config_variable("credentials_file", str(tmp_path / "credentials"))
    env = shell_env(settings)
    for service in SERVED_SERVICES:
        client = session.create_client(service, region_name="us-east-1")
        assert client.meta.endpoint_url == "http://127.0.0.1:9300", service
        service_id = client.meta.service_model.service_id.hyphenize().replace("-", "_").upper()
        assert env[f"AWS_ENDPOINT_URL_{service_id}"] == "http://127.0.0.1:9300", service


def test_shell_env_names_every_endpoint(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=str(tmp_path), port=9200)
    env = shell_env(settings)
    assert env["AWS_PROFILE"] == "opensage"
    assert env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == "http://127.0.0.1:9200"
    assert env["AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"] == "http://127.0.0.1:9200"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9201"
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:9202" and "127.0.0.1" in env["NO_PROXY"]
    assert "HTTPS_PROXY" not in shell_env(settings, sdk_proxy=False)


def test_env_names_the_aws_files_up_wrote_to(tmp_path: Path) -> None:
    import json

    from opensage.config import SETTINGS_FILE

    custom = {
        "AWS_CONFIG_FILE": str(tmp_path / "aws" / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws" / "credentials"),
    }
    at_up = load_settings(env=custom, home=str(tmp_path / "home"), port=9300)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / SETTINGS_FILE).write_text(json.dumps(at_up.saved()))
    later = load_settings(env={}, home=str(tmp_path / "home"))  # another shell, no AWS_* variables
    env = shell_env(later)
    assert env["AWS_CONFIG_FILE"] == custom["AWS_CONFIG_FILE"]
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == custom["AWS_SHARED_CREDENTIALS_FILE"]
    assert env["AWS_ENDPOINT_URL_SAGEMAKER"] == "http://127.0.0.1:9300"
