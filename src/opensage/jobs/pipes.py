"""A training job's channels: downloaded (File mode), or streamed through a FIFO per epoch (Pipe mode).

In Pipe mode SageMaker does not download a channel: the container reads it from the named pipe
``/opt/ml/input/data/<channel>_<epoch>``, ``<channel>_0`` first; once the reader has reached the end
of one, the next epoch's pipe appears and streams the channel's objects again, in the same order.
:class:`ChannelPipe` does that on this machine, streaming straight from the object store, so a
channel never takes the job's disk. A host's pipe carries the objects its ``S3DataDistributionType``
gives it. The XGBoost image reads its channels as files, so its Pipe-mode channels are downloaded as
in File mode (the job's log says so); so are ``FastFile`` channels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opensage.contract import Layout
from opensage.jobs import channels
from opensage.jobs.channels import S3Object
from opensage.jobs.specs import TrainingJobSpec

log = logging.getLogger(__name__)
CHUNK = 1 << 20
FILE_ONLY_IMAGES = ("xgboost",)


class ChannelPipe:
    """Feeds ``<data_dir>/<channel>_<epoch>`` FIFOs, one epoch after the other, until closed."""

    def __init__(self, s3: Any, objects: list[S3Object], data_dir: Path, channel: str) -> None:
        self.s3, self.objects, self.data_dir, self.channel = s3, objects, data_dir, channel
        self._closed = threading.Event()
        self._current: Path | None = None
        self.epochs = 0  # pipes fully written
        self._thread = threading.Thread(target=self._feed, name=f"pipe-{channel}", daemon=True)

    def start(self) -> None:
        self._make(0)
        self._thread.start()

    def _make(self, epoch: int) -> Path:
        path = self.data_dir / f"{self.channel}_{epoch}"
        os.mkfifo(path, 0o600)
        owner = self.data_dir.stat()  # the container's user owns the job's directories
        with contextlib.suppress(PermissionError):
            os.chown(path, owner.st_uid, owner.st_gid)
        self._current = path
        return path

    def _feed(self) -> None:
        epoch = 0
        while not self._closed.is_set():
            try:
                fd = os.open(self.data_dir / f"{self.channel}_{epoch}", os.O_WRONLY)  # until the container opens it
            except OSError:
                return
            try:
                if self._closed.is_set():
                    return
                self._write_epoch(fd)
                self.epochs += 1
            except BrokenPipeError:  # the reader stopped before the end: that epoch is over
                pass
            except Exception:
                log.exception("the %s pipe of epoch %d failed", self.channel, epoch)
                return
            finally:
                if not self._closed.is_set():  # the next epoch's pipe exists before the reader sees this one end
                    with contextlib.suppress(OSError):
                        self._make(epoch + 1)
                os.close(fd)
            epoch += 1

    def _write_epoch(self, fd: int) -> None:
        for o in self.objects:
            body = self.s3.get_object(Bucket=o.bucket, Key=o.key)["Body"]
            for chunk in body.iter_chunks(CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                if self._closed.is_set():
                    return

    def close(self) -> None:
        """Stop feeding: a writer waiting for its reader is released, and the pipe left is removed."""
        self._closed.set()
        current = self._current
        if current is not None and self._thread.is_alive():
            with contextlib.suppress(OSError):  # opening the read end lets the blocked open for writing return
                reader = os.open(current, os.O_RDONLY | os.O_NONBLOCK)
                self._thread.join(timeout=5)
                os.close(reader)
        self._thread.join(timeout=5)
        for path in self.data_dir.glob(f"{self.channel}_*"):
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(path.lstat().st_mode):
                    path.unlink()


def prepare(
    s3: Any,
    job: TrainingJobSpec,
    layouts: dict[str, Layout],
    cache: Path,
    region: str,
    image_name: str | None,
    say: Callable[[str], None],
) -> list[ChannelPipe]:
    """Download each File-mode channel into every host's ``input/data``; start the Pipe-mode ones' pipes."""
    hosts = list(layouts)
    requested = {c["ChannelName"]: c for c in job.document.get("InputDataConfig") or []}
    started: list[ChannelPipe] = []
    try:
        for channel in job.channels:
            cname = channel.name
            objects = channels.list_channel(s3, requested[cname], region)
            per_host = channels.assign(objects, hosts, channel.distribution)
            piped = channel.input_mode == "Pipe" and image_name not in FILE_ONLY_IMAGES
            if piped:
                for host in hosts:
                    pipe = ChannelPipe(s3, per_host[host], layouts[host].channel_dir(cname).parent, cname)
                    pipe.start()
                    started.append(pipe)
                say(f"Channel '{cname}' is streamed in Pipe mode: {len(objects)} objects, through {cname}_0, "
                    f"{cname}_1, ... in /opt/ml/input/data, an epoch each.")
                continue
            if channel.input_mode != "File":
                say(f"Channel '{cname}' asks for {channel.input_mode} mode; OpenSage downloads it as in File mode.")
            targets = {h: layouts[h].channel_dir(cname) for h in hosts}
            say(channels.download(s3, per_host, targets, cache / cname).describe(cname))
    except BaseException:
        for pipe in started:
            pipe.close()
        raise
    return started
