"""The dispatch table: built once from the service models and the provider classes, shared by the
gateway and the console; a provider method that names no operation stops the start-up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from opensage.app import PROVIDER_CLASSES, Platform, create_app
from opensage.aws.context import RequestContext
from opensage.aws.dispatch import DispatchError, DispatchTable, coverage, operation_methods
from opensage.aws.specs import Specs, load_specs
from opensage.config import load_settings
from opensage.errors import ServiceError


@pytest.fixture(scope="module")
def specs() -> Specs:
    return load_specs()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home: Path = tmp_path_factory.mktemp("home")
    app = create_app(load_settings(env={}, home=str(home), port=28780))
    yield app
    app.close()


def _ctx(service: str, operation: str) -> RequestContext:
    return RequestContext(service, operation, "us-east-1", "123456789012", "req-1", "AKIA", "arn", "uid", 0.0)


class Sts:
    """A provider of two operations, one a coroutine, with helpers that are not operations."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_caller_identity(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(threading.current_thread().name)
        return {"Account": ctx.account_id}

    async def get_session_token(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(threading.current_thread().name)
        return {"Credentials": {"AccessKeyId": ctx.access_key_id}}

    def _account(self, ctx: RequestContext, name: str) -> str:  # private: never an operation
        return name

    def close(self) -> None:  # public, but cannot be called as (ctx, request): not operation-shaped
        pass

    @property
    def region(self) -> str:
        return "us-east-1"


class Misspelled(Sts):
    def get_caller_identiy(self, ctx: RequestContext, request: dict[str, Any]) -> dict[str, Any]:
        return {}


class PublicHelper(Sts):
    def require_role(self, ctx: RequestContext, role_arn: str) -> None:
        pass


class WrongShape(Sts):
    def assume_role(self, ctx: RequestContext) -> dict[str, Any]:  # type: ignore[override]
        return {}


def test_table_maps_each_operation_to_its_bound_method(specs: Specs) -> None:
    provider = Sts()
    table = DispatchTable.build(specs, {"sts": provider})
    handler = table.get("sts", "GetCallerIdentity")
    assert handler is not None and handler.method == provider.get_caller_identity and not handler.is_async
    session = table.get("sts", "GetSessionToken")
    assert session is not None and session.is_async
    assert table.get("sts", "AssumeRole") is None and not table.serves("sts", "AssumeRole")
    assert table.get("sts", "Close") is None and table.get("sts", "Account") is None


def test_sync_methods_run_on_a_worker_thread_and_coroutines_on_the_loop(specs: Specs) -> None:
    provider = Sts()
    table = DispatchTable.build(specs, {"sts": provider})
    ctx = _ctx("sts", "GetCallerIdentity")

    async def calls() -> None:
        assert await table.call("sts", "GetCallerIdentity", ctx, {}) == {"Account": "123456789012"}
        assert await table.call("sts", "GetSessionToken", ctx, {}) == {"Credentials": {"AccessKeyId": "AKIA"}}

    asyncio.run(calls())
    main = threading.current_thread().name
    assert provider.calls[0] != main and provider.calls[1] == main


def test_an_unserved_operation_is_not_implemented_naming_it(specs: Specs) -> None:
    table = DispatchTable.build(specs, {"sts": Sts()})
    with pytest.raises(ServiceError) as exc:
        asyncio.run(table.call("sts", "AssumeRole", _ctx("sts", "AssumeRole"), {}))
    assert exc.value.code == "NotImplemented" and exc.value.status == 501
    assert exc.value.message == "OpenSage does not implement STS AssumeRole yet."
    with pytest.raises(ServiceError, match="ECR DescribeRepositories"):
        table.require("ecr", "DescribeRepositories")  # a routed service without a provider


def test_a_misspelled_method_fails_the_build_naming_it_and_the_closest_operation(specs: Specs) -> None:
    with pytest.raises(DispatchError) as exc:
        DispatchTable.build(specs, {"sts": Misspelled()})
    message = str(exc.value)
    assert "Misspelled: method get_caller_identiy" in message and "names no STS operation" in message
    assert "get_caller_identity (GetCallerIdentity)" in message


def test_a_public_helper_fails_the_build(specs: Specs) -> None:
    with pytest.raises(DispatchError, match=r"PublicHelper: method require_role takes \(ctx, request\)"):
        DispatchTable.build(specs, {"sts": PublicHelper()})


def test_an_operation_named_method_of_another_shape_fails_the_build(specs: Specs) -> None:
    with pytest.raises(DispatchError, match=r"WrongShape: method assume_role is named after AssumeRole"):
        DispatchTable.build(specs, {"sts": WrongShape()})


def test_every_problem_is_in_one_error(specs: Specs) -> None:
    with pytest.raises(DispatchError) as exc:
        DispatchTable.build(specs, {"sts": Misspelled(), "iam": PublicHelper(), "s3": Sts()})
    message = str(exc.value)
    assert "get_caller_identiy" in message and "names no IAM operation" in message
    assert "services OpenSage does not route: s3" in message


def test_a_replaced_provider_gets_a_new_table_checked_the_same_way(specs: Specs) -> None:
    table = DispatchTable.build(specs, {"sts": Sts()})
    other = Sts()
    replaced = table.replaced("sts", other)
    handler = replaced.get("sts", "GetCallerIdentity")
    assert handler is not None and handler.method == other.get_caller_identity
    assert table.providers["sts"] is not other
    with pytest.raises(DispatchError):
        table.replaced("sts", Misspelled())


def test_every_method_of_the_real_providers_names_an_operation(specs: Specs) -> None:
    for service, cls in PROVIDER_CLASSES.items():
        served = operation_methods(specs.get(service), cls)
        assert served, service
        assert all(specs.get(service).operation(op) is not None for op in served)


def test_the_platform_serves_its_providers_through_one_table(platform: Platform, specs: Specs) -> None:
    table = platform.gateway.table
    assert {service: type(p) for service, p in table.providers.items()} == PROVIDER_CLASSES
    for entry in table.coverage():
        provider = table.providers.get(entry.service)
        for op in entry.served:
            handler = table.get(entry.service, op)
            assert handler is not None and getattr(handler.method, "__self__", None) is provider
    assert table.coverage() == coverage(specs, PROVIDER_CLASSES)  # what `opensage api-coverage` prints
    console = platform.console
    assert isinstance(console, Starlette)
    assert console.state.console.api.dispatch is table  # the console calls the gateway's own table


def test_coverage_counts_the_models_operations(specs: Specs) -> None:
    entries = {e.service: e for e in coverage(specs, PROVIDER_CLASSES)}
    assert list(entries) == list(specs.services)
    sagemaker = entries["sagemaker"]
    assert "CreateTrainingJob" in sagemaker.served
    assert sagemaker.total == len(specs.get("sagemaker").model.operation_names)
    assert list(sagemaker.served) == sorted(sagemaker.served)
    assert "InvokeEndpoint" in entries["sagemaker-runtime"].served
    assert "CreateRepository" in entries["ecr"].served and entries["ecr"].total > len(entries["ecr"].served)
