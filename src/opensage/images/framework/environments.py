"""Python environments for users' ``requirements.txt``, built once per requirements and reused.

An environment is a virtual environment that sees exactly the platform's own packages
(scikit-learn, pandas, XGBoost, PyTorch when installed) plus the requirements. The platform's
site directories are added to it by a ``.pth`` file (``site.addsitedir``, so editable installs and
their own ``.pth`` files work), whatever the platform's interpreter is: a virtual environment, a
pyenv or a system Python. ``--system-site-packages`` would not do: a virtual environment made from
another one's interpreter inherits the *base* interpreter's packages, not the outer environment's.

The requirements are installed with pip, as SageMaker's containers do: pip sees the platform's
packages as installed, keeps them where they satisfy the requirements and installs only the rest
(or another version, in the environment, where a requirement asks for one) into the environment.
When the platform has no pip, ``uv`` installs them (from the package indexes pip is configured
with). Environments are cached under ``OPENSAGE_ENV_CACHE`` by a hash of the requirements, the
Python version and the platform's site directories; a file lock makes concurrent jobs with the
same requirements build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

from opensage.contract import ENV_CACHE_ENV as CACHE_ENV

_COMPLETE = ".opensage-complete"
_PLATFORM_PTH = "_opensage_platform.pth"


class RequirementsError(Exception):
    """The requirements could not be installed; the message is the installer's."""


def cache_dir() -> Path:
    default = Path(os.environ.get("HOME", "/tmp")) / ".cache" / "opensage-envs"
    return Path(os.environ.get(CACHE_ENV) or default)


def platform_site_dirs() -> list[str]:
    """The platform interpreter's site directories, in its own order (user site included when enabled)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    seen: list[str] = []
    for d in dirs:
        if d not in seen and Path(d).is_dir():
            seen.append(d)
    return seen


def key(requirements: Path) -> str:
    digest = hashlib.sha256()
    digest.update(f"{sys.version_info[:3]}|{sys.prefix}|{'|'.join(platform_site_dirs())}\n".encode())
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


def _site_packages(target: Path) -> Path:
    return target / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _build(target: Path, requirements: Path, log: object) -> None:
    env = {**os.environ, "VIRTUAL_ENV": str(target)}
    env.setdefault("PIP_CACHE_DIR", str(target.parent / ".pip-cache"))  # a job's HOME goes away with the job
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONHOME", None)
    uv = _uv()
    if uv is not None:
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(target)], env, log)
    else:
        _run([sys.executable, "-m", "venv", "--without-pip", str(target)], env, log)
    python = target / "bin" / "python"
    # After the environment's own site-packages: the platform's, with their .pth files processed.
    lines = [f"import site; site.addsitedir({d!r})" for d in platform_site_dirs()]
    (_site_packages(target) / _PLATFORM_PTH).write_text("\n".join(lines) + "\n")
    if importlib.util.find_spec("pip") is not None:
        quiet = ["--disable-pip-version-check", "--no-input", "--no-warn-script-location", "-q"]
        _run([str(python), "-m", "pip", "install", *quiet, "-r", str(requirements)], env, log)
    elif uv is not None:
        _run([uv, "pip", "install", "--python", str(python), "-r", str(requirements)], {**env, **_pip_settings()}, log)
    else:
        raise RequirementsError("neither pip nor uv is installed in the platform's Python to install requirements.txt")
