"""Attacks from the same machine on a running ``opensage up``, each refused.

The SDK proxy tunnels only to public hosts; the object store's internal ports answer nobody but the
platform; half-open connections are closed while signed requests go on; a body that does not match
its signed hash is not stored.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from helpers import RunningPlatform, running_platform

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    root = tmp_path_factory.mktemp("security")
    with running_platform(root / "home", root / "aws") as running:
        yield running


def connect_via_proxy(platform: RunningPlatform, target: str, timeout: float = 15) -> bytes:
    """The proxy's status line for ``CONNECT target``."""
    with socket.create_connection(("127.0.0.1", platform.port + 2), timeout=timeout) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "offset",
    [
        0,  # the API
        1,  # S3
        4,  # the store's own S3 gateway
        10,  # the store's master
        12,  # the store's filer
    ],
)
def test_proxy_never_tunnels_to_the_platforms_own_ports(platform: RunningPlatform, offset: int) -> None:
    for host in ("127.0.0.1", "localhost", "[::1]", "127.1.2.3"):
        line = connect_via_proxy(platform, f"{host}:{platform.port + offset}")
        assert line.startswith(b"HTTP/1.1 403"), (host, line)


def test_proxy_refuses_link_local_and_this_machines_own_addresses(platform: RunningPlatform) -> None:
    assert connect_via_proxy(platform, "169.254.169.254:80").startswith(b"HTTP/1.1 403")  # cloud metadata
    assert connect_via_proxy(platform, "0.0.0.0:80").startswith(b"HTTP/1.1 403")
    own = socket.gethostbyname(socket.gethostname())
    assert connect_via_proxy(platform, f"{own}:{platform.port}").startswith(b"HTTP/1.1 403")


def test_unserved_aws_hosts_get_a_clear_error_instead_of_a_tunnel(platform: RunningPlatform) -> None:
    hosts = ("application-autoscaling.us-east-1.amazonaws.com", "s3.amazonaws.com", "ec2.cn-north-1.amazonaws.com.cn")
    for host in hosts:
        line = connect_via_proxy(platform, f"{host}:443")
        assert line.startswith(b"HTTP/1.1 403") and b"does not serve" in line, line


def test_the_sts_host_is_still_answered_by_the_platform(platform: RunningPlatform) -> None:
    assert connect_via_proxy(platform, "sts.us-east-1.amazonaws.com:443").startswith(b"HTTP/1.1 200")


def test_public_hosts_still_pass(platform: RunningPlatform) -> None:
    try:
        socket.getaddrinfo("pypi.org", 443)
    except OSError:
        pytest.skip("no DNS on this machine: pypi.org does not resolve")
    assert connect_via_proxy(platform, "pypi.org:443").startswith(b"HTTP/1.1 200")
