"""Archive bounds (tar and gzip bombs refused before a byte is written) and the `opensage quotas` listing."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from opensage.cli import main
from opensage.objects import transfer


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_a_tar_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    bomb = _tarball(tmp_path / "bomb.tar.gz", {"weights": bytes(80 * 1024 * 1024)})
    with pytest.raises(transfer.TooLarge, match="expands more than 100 times"):
        transfer.unpack_tarball(bomb, tmp_path / "out", transfer.Expansion(30 * 1024**3))
    assert not (tmp_path / "out").exists()


def test_size_and_file_count_bounds(tmp_path: Path) -> None:
    archive = _tarball(tmp_path / "a.tar.gz", {f"f{i}": b"x" * 100 for i in range(5)})
    with pytest.raises(transfer.TooLarge, match="more than 4 files"):
        transfer.unpack_tarball(archive, tmp_path / "out", transfer.Expansion(10**6, max_files=4))
    with pytest.raises(transfer.TooLarge, match="expands to more than 300 bytes"):
        transfer.unpack_tarball(archive, tmp_path / "out", transfer.Expansion(300))
    transfer.unpack_tarball(archive, tmp_path / "out", transfer.Expansion(10**6))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"f{i}" for i in range(5)]


def test_a_volume_caps_the_configured_size() -> None:
    assert transfer.Expansion.from_quotas({"archive_bytes": 50 * 1024**3}, 1).max_bytes == 1024**3
    assert transfer.Expansion.from_quotas({"archive_bytes": 2048}, 1).max_bytes == 2048


def test_a_gzip_bomb_is_refused_and_leaves_no_partial_file(tmp_path: Path) -> None:
    source = tmp_path / "train.csv.gz"
    source.write_bytes(gzip.compress(bytes(80 * 1024 * 1024)))
    with pytest.raises(transfer.TooLarge, match="expands more than 100 times"):
        transfer.gunzip_file(source, tmp_path / "train.csv", transfer.Expansion(30 * 1024**3))
    assert not (tmp_path / "train.csv").exists()


def test_opensage_quotas_lists_names_values_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENSAGE_QUOTA_ENDPOINTS", "3")
    assert main(["quotas", "--home", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("<instance type> for endpoint usage" in line and " 8 Instances" in line for line in lines)
    assert any(line.startswith("Number of endpoints") and " 3 Endpoints" in line for line in lines)
    assert main(["quotas", "--home", str(tmp_path), "--json"]) == 0
    rows = {r["QuotaName"]: r for r in json.loads(capsys.readouterr().out)["Quotas"]}
    assert rows["Number of concurrent training jobs"]["Value"] == 10
    assert rows["Number of endpoints"]["Setting"] == "OPENSAGE_QUOTA_ENDPOINTS"


def test_the_builtin_algorithm_refuses_a_gzip_bomb(tmp_path: Path) -> None:
    from opensage.images.xgboost.data import DataError, read_bytes

    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(b"1,2\n") + gzip.compress(b"3,4\n"))
    assert read_bytes(tmp_path / "a.csv.gz") == b"1,2\n3,4\n"
    (tmp_path / "bomb.csv.gz").write_bytes(gzip.compress(bytes(80 * 1024 * 1024)))
    with pytest.raises(DataError, match="gzip bomb"):
        read_bytes(tmp_path / "bomb.csv.gz")
