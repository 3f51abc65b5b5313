"""Image layers applied to a root file system as the OCI image spec says: whiteouts, opaque directories, links,
and entries that would write outside the root refused; the commands and users of an image's config."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from opensage.ecr.rootfs import ImageConfig, ImageError, apply_layer
from opensage.images.container import ContainerImage, image_command


def _layer(*entries: tuple[str, str, str]) -> io.BytesIO:
    """A tar of (kind, name, data-or-target) entries: kind f(ile), d(ir), s(ymlink), h(ard link)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for kind, name, value in entries:
            info = tarfile.TarInfo(name)
            if kind == "f":
                info.size, info.mode = len(value.encode()), 0o644
                tar.addfile(info, io.BytesIO(value.encode()))
                continue
            info.type = {"d": tarfile.DIRTYPE, "s": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}[kind]
            if kind == "d":
                info.mode = 0o755
            else:
                info.linkname = value
            tar.addfile(info)
    raw.seek(0)
    return raw


def test_later_layers_overwrite_remove_and_hide_what_earlier_ones_put(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    apply_layer(
        root,
        _layer(
            ("d", "etc", ""),
            ("f", "etc/app.conf", "one"),
            ("f", "etc/old.conf", "old"),
            ("d", "data", ""),
            ("f", "data/a", "a"),
            ("f", "data/b", "b"),
            ("f", "./bin/tool", "v1"),
        ),
    )
    apply_layer(
        root,
        _layer(
            ("f", "etc/app.conf", "two"),
            ("f", "etc/.wh.old.conf", ""),
            ("f", "data/.wh..wh..opq", ""),
            ("f", "data/c", "c"),
            ("s", "bin/link", "tool"),
            ("h", "bin/hard", "bin/tool"),
        ),
    )
    assert (root / "etc/app.conf").read_text() == "two"
    assert not (root / "etc/old.conf").exists()
    assert sorted(p.name for p in (root / "data").iterdir()) == ["c"]  # the opaque directory hid a and b
    assert (root / "bin/link").is_symlink() and (root / "bin/link").read_text() == "v1"
    assert (root / "bin/hard").stat().st_ino == (root / "bin/tool").stat().st_ino
    assert not list(root.rglob(".wh.*"))


def test_entries_that_would_leave_the_root_are_refused_or_kept_inside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    apply_layer(root, _layer(("f", "/abs/file", "kept inside"), ("f", "../escape", "dropped")))
    assert (root / "abs/file").read_text() == "kept inside"
    assert not (tmp_path / "escape").exists()
    apply_layer(root, _layer(("s", "door", str(outside))))
    with pytest.raises(ImageError, match="symbolic link that leads out of the image"):
        apply_layer(root, _layer(("f", "door/planted", "x")))
    assert not (outside / "planted").exists()
    with pytest.raises(ImageError, match="hard link"):
        apply_layer(root, _layer(("h", "stolen", "../../etc/passwd")))


def test_a_file_replaces_a_symbolic_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    root, target = tmp_path / "root", tmp_path / "victim"
    root.mkdir()
    target.write_text("untouched")
    apply_layer(root, _layer(("s", "conf", str(target))))
    apply_layer(root, _layer(("f", "conf", "the image's")))
    assert target.read_text() == "untouched" and (root / "conf").read_text() == "the image's"


def _image(
    tmp_path: Path, entrypoint: tuple[str, ...] = (), cmd: tuple[str, ...] = (), user: str = ""
) -> ContainerImage:
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    config = ImageConfig(entrypoint, cmd, {"PATH": "/bin"}, "/work", user)
    return ContainerImage("r/x:1", "x", "1", "sha256:" + "0" * 64, tmp_path, config)


def test_commands_follow_docker_run(tmp_path: Path) -> None:
    bare = _image(tmp_path)
    assert bare.train_argv() == ("train",) and bare.serve_argv() == ("serve",)
    wrapped = _image(tmp_path, ("python", "/app/main.py"), ("--default",))
    assert wrapped.train_argv() == ("python", "/app/main.py", "train")
    assert wrapped.processing_argv() == ("python", "/app/main.py", "--default")
    assert image_command(wrapped, (), ("--other",), wrapped.processing_argv()) == ("python", "/app/main.py", "--other")
    assert image_command(wrapped, ("sh", "-c"), ("echo hi",), ()) == ("sh", "-c", "echo hi")
    assert wrapped.environment()["PATH"] == "/bin"


@pytest.mark.parametrize(
    ("user", "ids"),
    [("", ""), ("app", "1000:1001"), ("app:staff", "1000:50"), ("1000", "1000:1001"), ("4242:7", "4242:7")],
)
def test_the_images_user_becomes_numeric_ids(tmp_path: Path, user: str, ids: str) -> None:
    assert _image(tmp_path, user=user).user() == ids


def test_an_unknown_user_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a user of its /etc/passwd"):
        _image(tmp_path, user="ghost").user()
