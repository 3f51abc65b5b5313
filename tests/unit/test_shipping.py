"""A container's directory shipped to a node without the platform's home and its new files brought back."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from opensage.compute import shipping


def test_a_directory_goes_out_and_only_what_changed_comes_back(tmp_path: Path) -> None:
    root = tmp_path / "job" / "algo-1"
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "input" / "data" / "train" / "rows.csv").write_text("1,2\n")
    (root / "model").mkdir()
    venv = tmp_path / "job" / "python" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to("/usr/bin/python3")  # the platform's interpreter: kept as a link
    archive = shipping.pack([root, venv.parent])
    copy = tmp_path / "node"
    with tarfile.open(fileobj=io.BytesIO(archive)) as t:
        names = t.getnames()
    assert str(root / "input" / "data" / "train" / "rows.csv").lstrip("/") in names

    # what a node does with it, at the same paths (here: after the platform's copy is moved away)
    os.rename(tmp_path / "job", copy)
    shipping.unpack(archive)
    assert (root / "input" / "data" / "train" / "rows.csv").read_text() == "1,2\n"
    assert os.readlink(venv / "python") == "/usr/bin/python3"
    before = shipping.snapshot(root)
    (root / "model" / "model.bin").write_bytes(b"weights")
    (root / "output").mkdir()
    (root / "output" / "failure").write_text("it broke")
    results = shipping.pack_changes(root, before)
    with tarfile.open(fileobj=io.BytesIO(results)) as t:
        assert sorted(t.getnames()) == ["model/model.bin", "output/failure"]
    home = copy / "algo-1"
    shipping.unpack_changes(results, home)
    assert (home / "model" / "model.bin").read_bytes() == b"weights" and (home / "output" / "failure").exists()


def test_what_comes_back_cannot_write_outside_the_directory(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as t:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.FilterError):
        shipping.unpack_changes(buffer.getvalue(), tmp_path / "root")
    assert not (tmp_path / "escaped").exists()


def test_the_log_is_read_a_piece_at_a_time(tmp_path: Path) -> None:
    log = tmp_path / "algo-1.log"
    assert shipping.read_from(log, 0) == b""
    log.write_bytes(b"line one\nline two\n")
    first = shipping.read_from(log, 0, most=9)
    assert first == b"line one\n" and shipping.read_from(log, len(first)) == b"line two\n"
    shipping.append(tmp_path / "copy" / "algo-1.log", first)
    assert (tmp_path / "copy" / "algo-1.log").read_bytes() == b"line one\n"
