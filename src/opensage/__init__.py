"""OpenSage: a self-hosted machine-learning platform that speaks Amazon SageMaker's wire API."""

from typing import Any


def __getattr__(name: str) -> Any:
    # ``__version__`` is read from the installed metadata only when asked: every job's process imports
    # this package, and importlib.metadata costs it about 20 ms at start-up
    if name != "__version__":
        raise AttributeError(f"module 'opensage' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("opensage")
    except PackageNotFoundError:  # running from a source tree
        found = "0.0.0"
    globals()["__version__"] = found
    return found
