"""Errors shared by every layer.

Interfaces (store, objects, compute) raise the neutral errors; providers translate them into
:class:`ServiceError` with the code AWS returns for that operation; only the gateway turns a
:class:`ServiceError` into HTTP.
"""

from __future__ import annotations

from typing import Any


class OpenSageError(Exception):
    """Base of every error the platform raises on purpose."""


class NotFound(OpenSageError):
    """A resource that was asked for does not exist."""


class AlreadyExists(OpenSageError):
    """A resource with that name exists already."""


class Conflict(OpenSageError):
    """The resource is not in a state that allows the change (compare-and-set lost)."""


class ServiceError(OpenSageError):
    """An error answered to an API caller in the AWS error shape of the service's protocol.

    ``status`` is the HTTP status; ``sender_fault`` selects ``Sender``/``Receiver`` in query
    protocol errors; ``fields`` are extra members of the error shape (e.g. ``OriginalStatusCode``).
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        *,
        sender_fault: bool = True,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.sender_fault = sender_fault
        self.fields = fields or {}
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"ServiceError({self.code!r}, {self.message!r}, {self.status})"


def validation_error(message: str) -> ServiceError:
    return ServiceError("ValidationException", message)


def not_found(message: str) -> ServiceError:
    """SageMaker answers a missing resource with ValidationException "Could not find ..."."""
    return ServiceError("ValidationException", message)


def resource_not_found(message: str) -> ServiceError:
    return ServiceError("ResourceNotFound", message)


def resource_in_use(message: str) -> ServiceError:
    return ServiceError("ResourceInUse", message)


def limit_exceeded(message: str) -> ServiceError:
    return ServiceError("ResourceLimitExceeded", message)


class InternalFailure(ServiceError):
    def __init__(self, request_id: str) -> None:
        super().__init__(
            "InternalFailure",
            f"The request processing has failed because of an unknown error (request id {request_id}).",
            500,
            sender_fault=False,
        )
