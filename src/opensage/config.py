"""Settings: the one place that reads the environment.

Everything else receives a :class:`Settings` object. Precedence: command-line flags, then
``OPENSAGE_*`` environment variables, then the values saved in ``<home>/settings.json`` by the
last ``opensage up`` on that home, then the defaults below.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensage import quotas as _quotas
from opensage.errors import OpenSageError

DEFAULT_PORT = 8780
DEFAULT_REGION = "us-east-1"
SETTINGS_FILE = "settings.json"
HOME_MARKER = "opensage-home"  # written in every home so a foreign directory is never taken for one


@dataclass(frozen=True, slots=True)
class Ports:
    """Every port the platform opens, derived from one base port so two homes never collide."""

    api: int
    s3: int
    proxy: int  # HTTPS proxy that answers the SageMaker SDK's fixed STS host names
    sts_tls: int  # TLS listener behind that proxy (loopback only)
    store_base: int  # the embedded store's internal ports start here
    s3_store: int  # the embedded store's own S3 gateway, behind the S3 front on ``s3`` (loopback only)
    registry: int  # the container registry's OCI distribution API (``/v2/``)

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(
            api=base, s3=base + 1, proxy=base + 2, sts_tls=base + 3, store_base=base + 10, s3_store=base + 4,
            registry=base + 5,
        )


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    region: str = DEFAULT_REGION
    database_url: str = ""  # empty: SQLite under home
    s3_endpoint: str = ""  # empty: the embedded store
    s3_access_key: str = ""
    s3_secret_key: str = ""
    profile: str = "opensage"
    aws_config_file: Path = field(default_factory=lambda: Path.home() / ".aws" / "config")
    aws_credentials_file: Path = field(default_factory=lambda: Path.home() / ".aws" / "credentials")
    max_body_bytes: int = 8 * 1024 * 1024
    autoscaling_interval_s: float = 60.0  # how often target-tracking policies are evaluated (a CloudWatch minute)
    serverless_idle_s: float = 300.0  # how long a serverless variant's model server may idle before it stops
    log_level: str = "info"
    ca_bundle_source: str = ""  # the CA bundle clients trusted before (kept in OpenSage's bundle)
    quotas: dict[str, int] = field(default_factory=_quotas.defaults)  # by key of opensage.quotas.QUOTAS
    compute: str = "local"  # the compute backend: local or ray (opensage.compute.backends)
    ray_address: str = ""  # the Ray cluster to use ("auto", host:port); empty: a head of the platform's own

    @property
    def ports(self) -> Ports:
        return Ports.from_base(self.port)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'opensage.db'}"

    @property
    def embedded_store(self) -> bool:
        return not self.s3_endpoint

    @property
    def api_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.ports.api}"

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint or f"http://{_url_host(self.host)}:{self.ports.s3}"

    @property
    def internal_s3_url(self) -> str:
        """Where the platform's own S3 client goes: the S3 front, as every client (the store's own port is private)."""
        return self.s3_url

    @property
    def registry_host(self) -> str:
        """``host:port`` of the container registry, as image names and ``docker login`` take it."""
        return f"{_url_host(self.host)}:{self.ports.registry}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.registry_host}"

    @property
    def proxy_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.ports.proxy}"

    def with_(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def saved(self) -> dict[str, Any]:
        """What ``up`` saves in the home so ``status``/``env``/``down`` find the same platform."""
        return {
            "host": self.host,
            "port": self.port,
            "region": self.region,
            "database_url": self.database_url,
            "s3_endpoint": self.s3_endpoint,
            "profile": self.profile,
            "aws_config_file": str(self.aws_config_file),
            "aws_credentials_file": str(self.aws_credentials_file),
            "quotas": dict(self.quotas),
            "compute": self.compute,
            "ray_address": self.ray_address,
        }


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from flags (``overrides``, ``None`` meaning unset), environment and saved file."""
    env = os.environ if env is None else env
    home = Path(overrides.get("home") or env.get("OPENSAGE_HOME") or Path.home() / ".opensage").expanduser()
    saved: dict[str, Any] = {}
    path = home / SETTINGS_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}

    def pick(name: str, env_name: str, default: Any, cast: Any = str) -> Any:
        if overrides.get(name) is not None:
            return cast(overrides[name])
        if env.get(env_name):
            return cast(env[env_name])
        if saved.get(name) not in (None, ""):
            return cast(saved[name])
        return default

    aws_dir = Path.home() / ".aws"
    return Settings(
        home=home.resolve(),
        host=pick("host", "OPENSAGE_HOST", "127.0.0.1"),
        port=pick("port", "OPENSAGE_PORT", DEFAULT_PORT, int),
        region=pick("region", "OPENSAGE_REGION", DEFAULT_REGION),
        database_url=pick("database_url", "OPENSAGE_DATABASE_URL", ""),
        s3_endpoint=pick("s3_endpoint", "OPENSAGE_S3_ENDPOINT", ""),
        s3_access_key=env.get("OPENSAGE_S3_ACCESS_KEY_ID", ""),
        s3_secret_key=env.get("OPENSAGE_S3_SECRET_ACCESS_KEY", ""),
        profile=pick("profile", "OPENSAGE_PROFILE", "opensage"),
        # the files `up` wrote the profile to, so that `opensage env` from another shell names them
        aws_config_file=Path(
            env.get("AWS_CONFIG_FILE") or saved.get("aws_config_file") or aws_dir / "config"
        ).expanduser(),
        aws_credentials_file=Path(
            env.get("AWS_SHARED_CREDENTIALS_FILE") or saved.get("aws_credentials_file") or aws_dir / "credentials"
        ).expanduser(),
        log_level=pick("log_level", "OPENSAGE_LOG_LEVEL", "info"),
        compute=pick("compute", "OPENSAGE_COMPUTE", "local"),
        ray_address=pick("ray_address", "OPENSAGE_RAY_ADDRESS", ""),
        quotas=_load_quotas(env, saved.get("quotas")),
        autoscaling_interval_s=float(env.get("OPENSAGE_AUTOSCALING_INTERVAL_S") or 60.0),
        serverless_idle_s=float(env.get("OPENSAGE_SERVERLESS_IDLE_S") or 300.0),
        ca_bundle_source=next(
            (
                env[k]
                for k in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
                if env.get(k) and Path(env[k]).is_file() and "opensage" not in env[k]
            ),
            "",
        ),
    )


def _load_quotas(env: Mapping[str, str], saved: Any) -> dict[str, int]:
    """Each quota from ``OPENSAGE_QUOTA_<KEY>``, else as the last ``up`` saved it, else its default."""
    values = _quotas.defaults()
    for quota in _quotas.QUOTAS:
        raw = env.get(quota.env) or (saved.get(quota.key) if isinstance(saved, dict) else None)
        if raw in (None, ""):
            continue
        try:
            values[quota.key] = max(0, int(raw))
        except (TypeError, ValueError):
            raise OpenSageError(f"{quota.env} must be a whole number (got {raw!r}).") from None
    return values
