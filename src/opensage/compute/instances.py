"""Instance types: vCPUs, memory and GPUs of each ``ml.*`` type, plus ``local`` and ``local_gpu``."""

from __future__ import annotations

import os
from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True, slots=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: float
    gpus: int = 0

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GiB)


_SIZES = {
    "medium": 2,  # ml.t2.medium / ml.t3.medium, the tutorials' notebook and endpoint size: 2 vCPUs, 4 GiB
    "large": 2,
    "xlarge": 4,
    "2xlarge": 8,
    "4xlarge": 16,
    "8xlarge": 32,
    "9xlarge": 36,
    "12xlarge": 48,
    "16xlarge": 64,
    "18xlarge": 72,
    "24xlarge": 96,
}
# memory per vCPU by family
_FAMILIES = {
    "m4": 4.0,
    "m5": 4.0,
    "m5d": 4.0,
    "m6i": 4.0,
    "m7i": 4.0,
    "c4": 1.875,
    "c5": 2.0,
    "c5d": 2.0,
    "c6i": 2.0,
    "c7i": 2.0,
    "r5": 8.0,
    "r5d": 8.0,
    "r6i": 8.0,
    "t2": 4.0,
    "t3": 4.0,
}
_GPU = {
    "ml.p3.2xlarge": InstanceType("ml.p3.2xlarge", 8, 61, 1),
    "ml.p3.8xlarge": InstanceType("ml.p3.8xlarge", 32, 244, 4),
    "ml.p3.16xlarge": InstanceType("ml.p3.16xlarge", 64, 488, 8),
    "ml.g4dn.xlarge": InstanceType("ml.g4dn.xlarge", 4, 16, 1),
    "ml.g4dn.2xlarge": InstanceType("ml.g4dn.2xlarge", 8, 32, 1),
    "ml.g5.xlarge": InstanceType("ml.g5.xlarge", 4, 16, 1),
    "ml.g5.2xlarge": InstanceType("ml.g5.2xlarge", 8, 32, 1),
    "ml.p4d.24xlarge": InstanceType("ml.p4d.24xlarge", 96, 1152, 8),
}


def _machine() -> InstanceType:
    cpus = os.cpu_count() or 1
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = pages * page_size / GiB
    except (ValueError, OSError):
        memory = 4.0
    return InstanceType("local", cpus, memory)


def lookup(name: str) -> InstanceType | None:
    """The type called ``name``, or ``None`` when OpenSage does not know it."""
    if name in ("local", "local_gpu"):
        machine = _machine()
        return InstanceType(name, machine.vcpus, machine.memory_gib, 1 if name == "local_gpu" else 0)
    if name in _GPU:
        return _GPU[name]
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "ml":
        return None
    family, size = parts[1], parts[2]
    if family not in _FAMILIES or size not in _SIZES:
        return None
    vcpus = _SIZES[size]
    return InstanceType(name, vcpus, 4.0 if size == "medium" else vcpus * _FAMILIES[family])
