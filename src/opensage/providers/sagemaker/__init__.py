"""Amazon SageMaker control plane."""

from opensage.providers.sagemaker.provider import SageMakerProvider

__all__ = ["SageMakerProvider"]
