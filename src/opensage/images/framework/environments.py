"""Python environments for users' ``requirements.txt``, built once per requirements and reused.

An environment is a virtual environment over the platform's own Python that also sees its
packages (``--system-site-packages``: scikit-learn, XGBoost, PyTorch when installed), with the
requirements installed by ``uv`` (or pip when uv is missing), from the package indexes that pip is
configured with. Environments are cached under ``OPENSAGE_ENV_CACHE`` by a hash of the requirements
and the Python version; a file lock makes concurrent jobs with the same requirements build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE_ENV = "OPENSAGE_ENV_CACHE"
_COMPLETE = ".opensage-complete"


class RequirementsError(Exception):
    """The requirements could not be installed; the message is the installer's."""


def cache_dir() -> Path:
    default = Path(os.environ.get("HOME", "/tmp")) / ".cache" / "opensage-envs"
    return Path(os.environ.get(CACHE_ENV) or default)


def key(requirements: Path) -> str:
    digest = hashlib.sha256()
    digest.update(f"{sys.version_info[:3]}|{sys.prefix}\n".encode())
    digest.update(requirements.read_bytes())
    return digest.hexdigest()[:20]


def ensure(requirements: Path, log: object = print) -> Path:
    """The Python executable of an environment with ``requirements`` installed (built if needed)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / key(requirements)
    python = target / "bin" / "python"
    if (target / _COMPLETE).exists():
        _say(log, f"Using the cached environment {target.name} for {requirements.name}")
        return python
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _COMPLETE).exists():
            _say(log, f"Using the environment {target.name} for {requirements.name}, built by another job")
            return python
        shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        _say(log, f"Installing {requirements.name} into a new environment {target.name}")
        try:
            _build(target, requirements, log)
        except RequirementsError:
            shutil.rmtree(target, ignore_errors=True)
            raise
        (target / _COMPLETE).write_text(requirements.read_text())
        _say(log, f"Environment ready in {time.monotonic() - started:.1f} s")
    return python


def _say(log: object, message: str) -> None:
    if callable(log):
        log(message)


def _uv() -> str | None:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return None


def _pip_settings() -> dict[str, str]:
    """pip's configured indexes and wheel directories, as uv's variables."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values: dict[str, str] = {}
    for line in out.splitlines():
        name, _, value = line.partition("=")
        option = name.rsplit(".", 1)[-1]
        values[option] = value.strip().strip("'\"")
    env = {}
    if "index-url" in values:
        env["UV_INDEX_URL"] = values["index-url"]
    if "extra-index-url" in values:
        env["UV_EXTRA_INDEX_URL"] = " ".join(u for u in values["extra-index-url"].split() if _usable(u))
    if "cert" in values and Path(values["cert"]).exists():
        env["SSL_CERT_FILE"] = values["cert"]
    if "find-links" in values:
        env["UV_FIND_LINKS"] = ",".join(u for u in values["find-links"].split() if _usable(u))
    env["UV_NATIVE_TLS"] = "1"  # the machine's trust store, as pip uses it
    return {k: v for k, v in env.items() if v}


def _usable(location: str) -> bool:
    path = location.removeprefix("file://")
    return not location.startswith("/") and not location.startswith("file://") or Path(path).exists()


def _run(argv: list[str], env: dict[str, str], log: object) -> None:
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout.splitlines():
        _say(log, line)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
        raise RequirementsError(" ".join(lines[-6:]) or f"the installer exited with code {proc.returncode}")


def _build(target: Path, requirements: Path, log: object) -> None:
    env = {**os.environ, **_pip_settings(), "VIRTUAL_ENV": str(target)}
    env.pop("PYTHONPATH", None)
    uv = _uv()
    if uv is not None:
        _run([uv, "venv", "--quiet", "--system-site-packages", "--python", sys.executable, str(target)], env, log)
        _run([uv, "pip", "install", "--python", str(target / "bin" / "python"), "-r", str(requirements)], env, log)
        return
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(target)], env, log)
    _run([str(target / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)], env, log)
