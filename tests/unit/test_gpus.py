"""GPUs for instance types that have them: found on the machine, handed out least-held first, given back."""

from __future__ import annotations

from pathlib import Path

from opensage.compute import gpus


def test_the_machines_gpus_are_its_device_files_or_the_setting(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"):
        (tmp_path / name).touch()
    assert gpus.machine_gpus({}, tmp_path) == [0, 1]
    assert gpus.machine_gpus({gpus.GPUS_ENV: "3"}, tmp_path) == [0, 1, 2]
    assert gpus.machine_gpus({gpus.GPUS_ENV: "1,3"}, tmp_path) == [1, 3]
    assert gpus.machine_gpus({}, tmp_path / "missing") == []


def test_gpus_go_to_containers_least_held_first() -> None:
    pool = gpus.GpuPool([0, 1, 2])
    first, second = pool.take(2), pool.take(1)
    assert first == [0, 1] and second == [2]
    assert pool.take(2) == [0, 1]  # all are held: shared, round-robin
    pool.give_back(first)
    assert pool.take(1) == [0]
    assert gpus.GpuPool([]).take(1) == [] and gpus.visible([]) == {}
    assert gpus.visible([1, 3]) == {"CUDA_VISIBLE_DEVICES": "1,3"}
