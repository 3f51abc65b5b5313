"""The embedded store in a network namespace of its own, reachable only through Unix sockets.

``weed mini``'s master, volume and filer ports answer anyone who can connect, and on loopback that
is every local process (the filer lists, reads and deletes every object). In a private network
namespace (``unshare --user --map-root-user --net``, where unprivileged user namespaces are
allowed) those ports exist only inside it; the platform reaches the store's S3 gateway through
weed's own ``-s3.localSocket`` in the store's 0700 data directory. The one call weed makes out, to
the platform's KMS, goes through a pair of forwarders: inside, a TCP listener on the KMS port joined
to a Unix socket in the data directory; outside, that socket joined to the API port. The launcher
(``python -m opensage.objects.netns``) brings up the namespace's loopback, sets a private umask (so
the gRPC sockets weed always puts in /tmp are its user's alone), starts weed and passes on its
signals (``SIGHUP`` reloads the keys) and its exit code.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_FLAGS = ("--user", "--map-root-user", "--net")


@functools.cache
def available() -> bool:
    """Can this machine give the store a network namespace of its own?"""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("ip") is None:
        return False
    try:
        return subprocess.run([unshare, *_FLAGS, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def wrap(argv: Sequence[str], bridges: Sequence[tuple[int, Path]]) -> list[str]:
    """``argv`` run in a new network namespace, each (port, unix socket) of ``bridges`` listening inside on loopback."""
    shape = [f"--bridge={port}={path}" for port, path in bridges]
    launcher = [sys.executable, "-m", "opensage.objects.netns", *shape, "--"]
    return [str(shutil.which("unshare")), *_FLAGS, *launcher, *argv]


def http_answers_unix(path: Path, timeout: float = 1.0, url: str = "/healthz") -> bool:
    """True when an HTTP server answers on the Unix socket ``path``."""
    conn = _UnixHTTPConnection(str(path), timeout)
    try:
        conn.request("GET", url)
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class Forwarder:
    """Joins each connection accepted on ``listen`` to a new one to ``target`` (TCP or Unix, either way)."""

    def __init__(self, listen: str | tuple[str, int], target: str | tuple[str, int]) -> None:
        self.target = target
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._join(self.request)

        server_cls: Any = socketserver.ThreadingUnixStreamServer if isinstance(listen, str) else _TcpServer
        if isinstance(listen, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listen)
        self.server = server_cls(listen, Handler)
        if isinstance(listen, str):
            os.chmod(listen, 0o600)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="opensage-forwarder", daemon=True)

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _join(self, client: socket.socket) -> None:
        family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as upstream:
            upstream.connect(self.target)
            back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
            back.start()
            _copy(client, upstream)
            back.join(60)


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True


def _copy(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def main(argv: Sequence[str]) -> int:
    """Inside the namespace: loopback up, the bridges, then weed with its signals passed on."""
    split = list(argv).index("--")
    bridges = [arg.removeprefix("--bridge=").split("=", 1) for arg in argv[:split]]
    command = list(argv[split + 1 :])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.umask(0o077)
    for port, path in bridges:
        Forwarder(("127.0.0.1", int(port)), path).start()
    child = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    while True:
        try:
            return child.wait()
        except InterruptedError:
            continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
