"""The machine's GPUs, handed to containers whose instance type has GPUs (``CUDA_VISIBLE_DEVICES``).

A container of an ``ml.g4dn.xlarge`` (1 GPU) or ``ml.p3.8xlarge`` (4) gets that many of the machine's
NVIDIA GPUs to itself while any are free, shared round-robin once all are taken (a job never waits
for a GPU: the platform has no queue). The GPUs are found as ``/dev/nvidia<N>`` device files, or given
with ``OPENSAGE_GPUS`` (a count, or the ids: ``0,2``). On a machine without GPUs nothing is set, and
the frameworks run on the CPU (``SM_NUM_GPUS`` still says what the instance type has). A container
whose own variables set ``CUDA_VISIBLE_DEVICES`` (the Ray backend's, from the GPUs Ray gave its actor)
keeps them.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

GPUS_ENV = "OPENSAGE_GPUS"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
_DEVICE = re.compile(r"^nvidia(\d+)$")


def machine_gpus(env: Mapping[str, str] | None = None, dev: Path = Path("/dev")) -> list[int]:
    """The ids of this machine's GPUs."""
    given = (os.environ if env is None else env).get(GPUS_ENV, "").strip()
    if given:
        return list(range(int(given))) if given.isdigit() else [int(x) for x in given.split(",") if x.strip()]
    try:
        found = [int(m.group(1)) for p in dev.iterdir() if (m := _DEVICE.match(p.name))]
    except OSError:
        return []
    return sorted(found)


class GpuPool:
    """Which of the machine's GPUs each running container holds."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        self._held: dict[int, int] = {i: 0 for i in self.ids}  # GPU -> containers holding it
        self._lock = threading.Lock()

    def take(self, count: int) -> list[int]:
        """``count`` GPUs, the least held first (free ones while there are); none on a machine without GPUs."""
        if count <= 0 or not self.ids:
            return []
        with self._lock:
            chosen = sorted(self.ids, key=lambda i: (self._held[i], i))[: min(count, len(self.ids))]
            for i in chosen:
                self._held[i] += 1
            return sorted(chosen)

    def give_back(self, ids: Sequence[int]) -> None:
        with self._lock:
            for i in ids:
                if self._held.get(i, 0) > 0:
                    self._held[i] -= 1


def visible(ids: Sequence[int]) -> dict[str, str]:
    return {VISIBLE_ENV: ",".join(map(str, ids))} if ids else {}
