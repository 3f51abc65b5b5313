"""The dispatch table: (service, operation) -> the provider method that serves it, built once at start-up.

A provider is a class whose public methods are named after its service's operations in snake_case
(botocore's ``xform_name``: ``CreateTrainingJob`` -> ``create_training_job``) and take
``(ctx, request)``; they may be coroutines. :meth:`DispatchTable.build` reads each provider's class
once and refuses to start when a public method callable as ``(ctx, request)`` names no operation of
its service's model (a misspelling, or a helper left public: helpers take a leading underscore), or
when a method named after an operation cannot be called that way. The error names the provider, the
method and the closest operation names.

The gateway and the console look their handlers up here, so both serve exactly the same methods; an
operation without one answers ``NotImplemented`` naming it. ``opensage api-coverage`` prints
:func:`coverage` of the provider classes, the same reading of the same classes.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore import xform_name
from starlette.concurrency import run_in_threadpool

from opensage.aws.context import RequestContext
from opensage.aws.specs import ServiceSpec, Specs
from opensage.errors import OpenSageError, ServiceError

Method = Callable[[RequestContext, dict[str, Any]], Any]


class DispatchError(OpenSageError):
    """Providers that do not fit their services' models; the message lists every problem, one a line."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("the providers do not fit the service models:\n  " + "\n  ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Handler:
    """The provider method serving one operation; ``is_async`` is read once, not per request."""

    service: str
    operation: str
    method: Method
    is_async: bool

    async def __call__(self, ctx: RequestContext, request: dict[str, Any]) -> Any:
        if self.is_async:
            return await self.method(ctx, request)
        return await run_in_threadpool(self.method, ctx, request)


@dataclass(frozen=True, slots=True)
class ServiceCoverage:
    """The operations of ``service`` that OpenSage serves, and how many its model has."""

    service: str
    service_id: str
    served: tuple[str, ...]
    total: int


def _function(raw: object) -> tuple[Callable[..., Any], int] | None:
    """The function behind a class attribute and how many leading parameters binding fills, if a method."""
    if isinstance(raw, staticmethod):
        return raw.__func__, 0
    if isinstance(raw, classmethod):
        return raw.__func__, 1
    if inspect.isfunction(raw):
        return raw, 1
    return None


def _takes_ctx_and_request(fn: Callable[..., Any], bound: int) -> bool:
    """Can ``fn``, once bound, be called as ``fn(ctx, request)``?"""
    params = list(inspect.signature(fn).parameters.values())[bound:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    keyword_required = any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params)
    return len(required) <= 2 and (len(positional) >= 2 or varargs) and not keyword_required


def _closest(name: str, methods: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(name, list(methods), n=3, cutoff=0.6)
    if not close:
        return "no operation's name is close"
    return "closest: " + ", ".join(f"{m} ({methods[m]})" for m in close)


def operation_methods(spec: ServiceSpec, cls: type) -> dict[str, str]:
    """Operation name -> method name, for provider class ``cls`` of ``spec``'s service.

    Raises:
        DispatchError: a public ``(ctx, request)`` method names no operation of the model, or a
            method named after an operation cannot be called as ``(ctx, request)``.
    """
    methods = {xform_name(op): op for op in spec.model.operation_names}
    found: dict[str, str] = {}
    problems: list[str] = []
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        function = _function(inspect.getattr_static(cls, name))
        if function is None:
            continue
        shaped = _takes_ctx_and_request(*function)
        operation = methods.get(name)
        where = f"{spec.name} provider {cls.__module__}.{cls.__qualname__}: method {name}"
        if operation is None:
            if shaped:
                problems.append(
                    f"{where} takes (ctx, request) but names no {spec.model.service_id} operation "
                    f"({_closest(name, methods)}); a helper's name starts with an underscore"
                )
        elif not shaped:
            problems.append(f"{where} is named after {operation} but cannot be called as (ctx, request)")
        else:
            found[operation] = name
    if problems:
        raise DispatchError(problems)
    return found


def coverage(specs: Specs, classes: Mapping[str, type]) -> list[ServiceCoverage]:
    """Per served service (in the order they are served), the operations ``classes`` implement.

    Raises:
        DispatchError: as :func:`operation_methods`, or a class for a service that is not served.
    """
    unknown = sorted(set(classes) - set(specs.services))
    if unknown:
        raise DispatchError([f"providers for services OpenSage does not route: {', '.join(unknown)}"])
    out = []
    for name, spec in specs.services.items():
        cls = classes.get(name)
        served = tuple(sorted(operation_methods(spec, cls))) if cls is not None else ()
        out.append(ServiceCoverage(name, spec.model.service_id, served, len(spec.model.operation_names)))
    return out


class DispatchTable:
    """Every served (service, operation) and its :class:`Handler`; build it with :meth:`build`."""

    def __init__(self, specs: Specs, providers: Mapping[str, object], handlers: Mapping[tuple[str, str], Handler]):
        self.specs = specs
        self.providers = dict(providers)
        self._handlers = dict(handlers)

    @classmethod
    def build(cls, specs: Specs, providers: Mapping[str, object]) -> DispatchTable:
        """The table for ``providers`` (botocore service name -> provider object).

        Raises:
            DispatchError: every problem of every provider, in one message (see :func:`operation_methods`).
        """
        problems: list[str] = []
        handlers: dict[tuple[str, str], Handler] = {}
        unknown = sorted(set(providers) - set(specs.services))
        if unknown:
            problems.append(f"providers for services OpenSage does not route: {', '.join(unknown)}")
        for service, provider in providers.items():
            if service in unknown:
                continue
            try:
                names = operation_methods(specs.get(service), type(provider))
            except DispatchError as exc:
                problems.extend(exc.problems)
                continue
            for operation, name in names.items():
                method = getattr(provider, name)
                handlers[service, operation] = Handler(service, operation, method, inspect.iscoroutinefunction(method))
        if problems:
            raise DispatchError(problems)
        return cls(specs, providers, handlers)

    def replaced(self, service: str, provider: object) -> DispatchTable:
        """A new table in which ``provider`` serves ``service`` (checked as :meth:`build` checks)."""
        return DispatchTable.build(self.specs, {**self.providers, service: provider})

    def get(self, service: str, operation: str) -> Handler | None:
        return self._handlers.get((service, operation))

    def require(self, service: str, operation: str) -> Handler:
        """The handler of ``operation``.

        Raises:
            ServiceError: ``NotImplemented`` (501) naming the operation, when no provider serves it.
        """
        handler = self._handlers.get((service, operation))
        if handler is None:
            service_id = self.specs.get(service).model.service_id if service in self.specs.services else service
            raise ServiceError(
                "NotImplemented",
                f"OpenSage does not implement {service_id} {operation} yet.",
                501,
                sender_fault=False,
            )
        return handler

    def serves(self, service: str, operation: str) -> bool:
        return (service, operation) in self._handlers

    async def call(self, service: str, operation: str, ctx: RequestContext, request: dict[str, Any]) -> Any:
        """Run the provider method of ``operation`` (on a worker thread unless it is a coroutine)."""
        return await self.require(service, operation)(ctx, request)

    def coverage(self) -> list[ServiceCoverage]:
        """Per served service, the operations this table serves (what :func:`coverage` says of its classes)."""
        return [
            ServiceCoverage(
                name,
                spec.model.service_id,
                tuple(sorted(op for service, op in self._handlers if service == name)),
                len(spec.model.operation_names),
            )
            for name, spec in self.specs.services.items()
        ]
