"""OpenSage: a self-hosted machine-learning platform that speaks Amazon SageMaker's wire API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("opensage")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
