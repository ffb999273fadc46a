"""Path containment: no dataset id, file name or archive member writes outside its root."""

from __future__ import annotations

import copy
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from cpabanim import files
from cpabanim.config.layers import load_params
from cpabanim.data import download, preprocess, sources
from cpabanim.data.listing import Item
from cpabanim.errors import DataError
from tests.conftest import PROJECT_ROOT
from tests.data.helpers import moving_square_video, write_gif


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture()
def params(tmp_path):
    p = copy.deepcopy(load_params(PROJECT_ROOT / "params.yaml"))
    p = p.to_dict() if hasattr(p, "to_dict") else p
    p["paths"] = {k: str(tmp_path / "project" / k) for k in p["paths"]}
    p["data"]["frame_size"] = 32
    return p


@pytest.mark.parametrize(
    "bad", ["../../x/evil", "a/b", "/etc/passwd", "..", ".hidden", "", "x" * 129, "id%(ext)s", "a*b", "a b"]
)
def test_ids_outside_the_strict_pattern_are_refused(bad):
    with pytest.raises(DataError, match="not a valid id"):
        files.validate_id(bad, "video id", "meta.csv")


@pytest.mark.parametrize("good", ["u6rJiF-gPx8", "-abcDEF_123", "id10001", "A.B_c-d"])
def test_real_ids_pass(good):
    assert files.validate_id(good, "video id", "meta.csv") == good


def test_contained_path_refuses_escapes_and_links_pointing_outside(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert files.contained_path(root, "train", "clip#1") == root / "train" / "clip#1"
    for parts in (("..", "x"), ("train", "..", "..", "x"), ("/tmp/x",), (".",)):
        with pytest.raises(DataError, match="outside"):
            files.contained_path(root, *parts)
    (root / "elsewhere").symlink_to(tmp_path)
    with pytest.raises(DataError, match="outside"):
        files.contained_path(root, "elsewhere", "file")
    assert files.contained_path(root, ".", allow_root=True) == root / "."


@pytest.mark.parametrize(
    ("column", "value"),
    [("video_id", "../../escape/evil"), ("video_id", "id1#../../evil"), ("person_id", "../../evil")],
)
def test_traversal_ids_in_metadata_are_refused_and_nothing_is_written(params, tmp_path, column, value):
    row = {"video_id": "id1#AAAAAAAAAAA", "person_id": "id1"} | {column: value}
    metadata = tmp_path / "metadata.csv"
    metadata.write_text(
        "video_id,start,end,bbox,fps,width,height,partition,person_id\n"
        f"{row['video_id']},0,10,0-0-32-32,25,64,64,train,{row['person_id']}\n"
    )
    params["data"].update(source="vox", metadata=str(metadata), youtube_url=(tmp_path / "yt").as_uri() + "/{id}.mp4")
    before = _files_under(tmp_path)
    with pytest.raises(DataError, match="line 2") as info:
        download.download(params["data"], params["paths"]["raw"])
    assert "not a valid id" in str(info.value)
    with pytest.raises(DataError, match="not a valid id"):
        preprocess.preprocess(params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"])
    # the raw folder may exist (created before the metadata is read); nothing else appeared anywhere
    assert _files_under(tmp_path) - before <= {"project", "project/raw", "project/raw/vox"}


def test_a_youtube_download_of_a_bad_id_writes_nothing(tmp_path):
    with pytest.raises(DataError, match="not a valid id"):
        sources.download_youtube("../../evil", tmp_path / "videos", "file:///nowhere/{id}.mp4")
    assert list(tmp_path.iterdir()) == []


def test_preprocess_skips_and_records_an_id_that_escapes_its_root(params, tmp_path, monkeypatch):
    frames = moving_square_video(3, 32)
    listed = [("train", "../../outside"), ("train", "ok"), ("test", "fine")]
    items = [Item(number, split, name, name, lambda: frames) for number, (split, name) in enumerate(listed)]
    monkeypatch.setattr(preprocess, "list_items", lambda data, seed, raw, keep: (i for i in items if keep(i.key)))
    manifest = preprocess.preprocess(
        params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"]
    )
    assert list(manifest["videos"]["train"]) == ["ok"] and list(manifest["videos"]["test"]) == ["fine"]
    assert [s["video"] for s in manifest["skipped"]] == ["../../outside"]
    assert "outside" in manifest["skipped"][0]["reason"]
    assert not (tmp_path / "outside").exists() and not (tmp_path / "project" / "outside").exists()


def _tar_with(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w") as tf:
        for info, payload in members:
            tf.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name: str, payload: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


TAR_ATTACKS = {
    "dot-dot": [_file("moving-gif/train/a.gif"), _file("../../escaped.txt")],
    "absolute": [_file("moving-gif/train/a.gif"), _file("/tmp/cpabanim-absolute-escape.txt")],
    "absolute-symlink": [_file("moving-gif/train/a.gif"), _link("moving-gif/train/link", "/etc")],
    "symlink-outside": [_file("moving-gif/train/a.gif"), _link("moving-gif/up", "../../..")],
    "hardlink-outside": [_file("moving-gif/train/a.gif"), _link("moving-gif/hard", "../../secret", tarfile.LNKTYPE)],
    "write-through-symlink": [_link("moving-gif/out", ".."), _file("moving-gif/out/../../escaped.txt")],
}


@pytest.mark.parametrize("attack", sorted(TAR_ATTACKS))
def test_hostile_tar_members_are_refused_and_the_partial_extraction_removed(tmp_path, attack):
    archive = _tar_with(tmp_path / "archive.tar", *TAR_ATTACKS[attack])
    root = tmp_path / "raw" / "mgif"
    root.mkdir(parents=True)
    with pytest.raises(DataError) as info:
        sources.unpack_archive(archive, root / "unpacked")
    message = str(info.value)
    assert str(archive) in message and "nothing was unpacked" in message and "\n" not in message
    assert list(root.iterdir()) == []  # no partial extraction, no staging folder
    assert _files_under(tmp_path) == {"archive.tar", "raw", "raw/mgif"}
    assert not Path("/tmp/cpabanim-absolute-escape.txt").exists()


@pytest.mark.parametrize("name", ["../escaped.txt", "/tmp/cpabanim-absolute-escape.txt", "a/../../escaped.txt"])
def test_hostile_zip_members_are_refused_and_nothing_is_written(tmp_path, name):
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("moving-gif/train/a.gif", b"gif")
        zf.writestr(zipfile.ZipInfo(name), b"escape")  # ZipInfo keeps the name as given
    root = tmp_path / "raw"
    root.mkdir()
    with pytest.raises(DataError, match="member"):
        sources.unpack_archive(archive, root / "unpacked")
    assert list(root.iterdir()) == [] and _files_under(tmp_path) == {"archive.zip", "raw"}


def test_a_corrupt_archive_is_a_clean_error_that_keeps_the_previous_extraction(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("moving-gif/train/a.gif", b"gif")
    dest = tmp_path / "raw" / "unpacked"
    sources.unpack_archive(good, dest)
    assert _files_under(dest) == {"moving-gif", "moving-gif/train", "moving-gif/train/a.gif"}
    truncated = tmp_path / "truncated.tar"
    _tar_with(truncated, _file("moving-gif/train/b.gif", b"x" * 4096))
    truncated.write_bytes(truncated.read_bytes()[:700])
    with pytest.raises(DataError, match="truncated.tar"):
        sources.unpack_archive(truncated, dest)
    assert _files_under(dest) == {"moving-gif", "moving-gif/train", "moving-gif/train/a.gif"}
    assert sorted(p.name for p in dest.parent.iterdir()) == ["unpacked"]


def test_the_mgif_download_of_a_hostile_archive_records_the_refusal(params, tmp_path):
    gif = write_gif(tmp_path / "a.gif", moving_square_video(3, 40))
    archive = tmp_path / "moving-gif.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(gif, "moving-gif/train/a.gif")
        info, payload = _file("../../../escaped.txt")
        tf.addfile(info, io.BytesIO(payload))
    params["data"]["source"] = "mgif"
    params["data"]["archive"] = {"url": archive.as_uri(), "sha256": ""}
    with pytest.raises(DataError, match="escaped.txt"):
        download.download(params["data"], params["paths"]["raw"])
    raw = tmp_path / "project" / "raw" / "mgif"
    manifest = json.loads((raw / "manifest.json").read_text())
    assert "escaped.txt" in manifest["failed"][0]["reason"]
    assert sorted(os.listdir(raw)) == ["manifest.json", "moving-gif.tar"]  # the archive stays for inspection
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))
