"""Download paths against local fixtures only (file:// URLs, archives and videos made here; no network)."""

from __future__ import annotations

import copy
import hashlib
import json
import zipfile

import numpy as np
import pytest

from cpabanim import files
from cpabanim import weights as weights_registry
from cpabanim.config.layers import load_params
from cpabanim.data import download, names, preprocess, sources
from cpabanim.errors import DataError
from tests.conftest import PROJECT_ROOT
from tests.data.helpers import moving_square_video, processed_video, write_gif, write_mp4


@pytest.fixture()
def params(tmp_path):
    p = copy.deepcopy(load_params(PROJECT_ROOT / "params.yaml"))
    p["paths"] = {k: str(tmp_path / k) for k in p["paths"]}
    p["data"]["frame_size"] = 32
    return p


def test_fetch_resumes_a_partial_download_and_checks_sha256(tmp_path):
    payload = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17)
    remote = tmp_path / "remote.bin"
    remote.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "local" / "file.bin"
    dest.parent.mkdir()
    part = sources.partial_path(dest)
    assert part.parent == dest.parent and part.name.startswith(".") and part.name.endswith(".tmp")  # .dvcignore
    part.write_bytes(payload[:1_000_000])  # an interrupted earlier attempt
    sources.fetch_url(remote.as_uri(), dest, digest)
    assert dest.read_bytes() == payload and not part.exists()
    # a corrupt partial file is caught by the checksum and removed
    dest.unlink()
    part.write_bytes(b"garbage")
    with pytest.raises(DataError, match="does not match"):
        sources.fetch_url(remote.as_uri(), dest, digest)
    assert not part.exists() and not dest.exists()
    with pytest.raises(DataError, match="failed"):
        sources.fetch_url((tmp_path / "absent").as_uri(), tmp_path / "x.bin")


def test_mgif_archive_download_and_preprocess(params, tmp_path):
    archive = tmp_path / "moving-gif.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split, count in (("train", 2), ("test", 1)):
            for i in range(count):
                gif = write_gif(tmp_path / "gifs" / f"{split}{i}.gif", moving_square_video(5, 40, seed=i))
                zf.write(gif, f"moving-gif/{split}/{split}{i}.gif")
    params["data"]["source"] = "mgif"
    params["data"]["archive"] = {"url": archive.as_uri(), "sha256": files.sha256_file(archive)}
    manifest = download.download(params["data"], params["paths"]["raw"])
    assert manifest["failed"] == [] and manifest["fetched"][0]["sha256"] == params["data"]["archive"]["sha256"]
    result = preprocess.preprocess(params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"])
    assert sorted(result["videos"]["train"]) == ["train0", "train1"]
    assert result["videos"]["test"]["test0"]["frames"] == 5
    assert len(processed_video(tmp_path / "processed", "train", "train0")) == 5
    # a wrong checksum is fatal for an archive (nothing usable) and recorded
    params["data"]["archive"]["sha256"] = "0" * 64
    (tmp_path / "raw" / "mgif" / "moving-gif.zip").unlink()
    with pytest.raises(DataError, match="does not match"):
        download.download(params["data"], params["paths"]["raw"])
    recorded = json.loads((tmp_path / "raw" / "mgif" / "manifest.json").read_text())
    assert "does not match" in recorded["failed"][0]["reason"]


def test_youtube_sources_with_dead_ids_recorded_not_fatal(params, tmp_path):
    # a fake "YouTube": local mp4s reached by yt-dlp through file:// URLs; one id has no video (dead link)
    remote = tmp_path / "youtube"
    write_mp4(remote / "AAAAAAAAAAA.mp4", moving_square_video(20, 64, seed=1), fps=25)
    metadata = tmp_path / "vox-metadata.csv"
    metadata.write_text(
        "video_id,start,end,bbox,fps,width,height,partition,person_id\n"
        "id001#AAAAAAAAAAA,0,10,0-0-32-32,25,64,64,train,id001\n"
        "id001#AAAAAAAAAAA,10,20,16-16-64-64,25,64,64,test,id001\n"
        "id002#DEADDEADDEA,0,10,0-0-64-64,25,64,64,train,id002\n"
    )
    # metadata given as a URL is fetched into the raw folder (as the published vox/taichi files are)
    params["data"].update(source="vox", metadata=metadata.as_uri(), youtube_url=remote.as_uri() + "/{id}.mp4")
    manifest = download.download(params["data"], params["paths"]["raw"])
    assert manifest["metadata"]["path"] == str(tmp_path / "raw" / "vox" / "metadata.csv")
    assert [f["id"] for f in manifest["fetched"]] == ["AAAAAAAAAAA"]
    assert [f["id"] for f in manifest["failed"]] == ["DEADDEADDEA"] and manifest["failed"][0]["reason"]
    assert manifest["metadata"]["chunks"] == 3
    result = preprocess.preprocess(params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"])
    # safe names (docs/data.md, "Names"); the field's names are in names.json, a skipped one is listed as such
    assert list(result["videos"]["train"]) == ["id001.AAAAAAAAAAA.000000.000010"]
    assert list(result["videos"]["test"]) == ["id001.AAAAAAAAAAA.000010.000020"]
    assert [s["video"] for s in result["skipped"]] == ["id002#DEADDEADDEA#000000#000010"]
    assert len(processed_video(tmp_path / "processed", "train", "id001.AAAAAAAAAAA.000000.000010")) == 10
    assert names.read_record(tmp_path / "processed") == {
        "id001.AAAAAAAAAAA.000000.000010": "id001#AAAAAAAAAAA#000000#000010",
        "id001.AAAAAAAAAAA.000010.000020": "id001#AAAAAAAAAAA#000010#000020",
    }


def test_bring_your_own_copy(params, tmp_path):
    copy_root = tmp_path / "my-vox" / "vox"
    for split in ("train", "test"):
        write_mp4(copy_root / split / f"p#{split}.mp4", moving_square_video(6, 48, seed=3))
    params["data"].update(source="vox", source_dir=str(tmp_path / "my-vox"))
    manifest = download.download(params["data"], params["paths"]["raw"])
    assert manifest["source_dir"] == str(copy_root) and len(manifest["fetched"]) == 2
    result = preprocess.preprocess(params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"])
    assert list(result["videos"]["train"]) == ["p.train"] and list(result["videos"]["test"]) == ["p.test"]
    assert names.original_name("p.test", params["paths"]["processed"]) == "p#test"


def test_sam_weights_download_checks_the_official_sha256(tmp_path, monkeypatch):
    fake = tmp_path / "sam_vit_b_01ec64.pth"
    fake.write_bytes(b"not the real checkpoint")
    with pytest.raises(DataError, match="does not match"):
        download.download_weights("sam_vit_b", tmp_path / "weights", url=fake.as_uri())
    monkeypatch.setitem(
        weights_registry.SAM_WEIGHTS,
        "sam_vit_b",
        {**weights_registry.SAM_WEIGHTS["sam_vit_b"], "sha256": files.sha256_file(fake)},
    )
    path = download.download_weights("sam_vit_b", tmp_path / "weights", url=fake.as_uri())
    assert path == tmp_path / "weights" / "sam_vit_b_01ec64.pth" and path.read_bytes() == fake.read_bytes()


def test_metadata_without_person_names_chunks_by_video(tmp_path):
    metadata = tmp_path / "taichi-metadata.csv"
    metadata.write_text(
        "video_id,start,end,bbox,fps,width,height,partition\nu6rJiF-gPx8,80,300,118-82-508-472,29.97,640,480,train\n"
    )
    (chunk,) = sources.read_metadata(metadata)
    assert chunk.field_name == "u6rJiF-gPx8#000080#000300" and chunk.bbox == (118, 82, 508, 472)
    assert chunk.name == "u6rJiF-gPx8.000080.000300"  # the safe name (docs/data.md, "Names")
    with pytest.raises(DataError, match="TED"):
        sources.metadata_path("ted", "", tmp_path, fetch=False)
    assert sources.PUBLISHED_METADATA["vox"]["url"].endswith("vox-metadata.csv")


def test_loss_weights_download_checks_the_hash_prefix_and_auto_picks_what_params_need(tmp_path, monkeypatch):
    from cpabanim import weights

    fake = tmp_path / "vgg19-dcbb9e9d.pth"
    fake.write_bytes(b"not vgg19")
    with pytest.raises(DataError, match="does not start with dcbb9e9d"):
        download.download_weights("vgg19", tmp_path / "weights", url=fake.as_uri())
    prefix = files.sha256_file(fake)[:8]
    monkeypatch.setitem(
        weights.WEIGHTS, "vgg19", weights.WeightFile("vgg19", fake.as_uri(), "vgg19-dcbb9e9d.pth", prefix, "test")
    )
    path = download.download_weights("vgg19", tmp_path / "weights")
    assert weights.find_weights("vgg19", tmp_path / "weights") == path
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert download.needed_weights(params) == []  # the offline default needs none
    params["loss"].update(perceptual="vgg", structure="dino")
    params["masks"]["source"] = "sam"
    assert download.needed_weights(params) == ["vgg19", "dino_vitb8", "sam_vit_b"]


def test_weights_command_fetches_checks_and_explains_in_one_line(tmp_path, capsys, caplog):
    """`cpabanim weights NAME|auto` (the command every missing-weights message names)."""
    import logging

    from cpabanim.cli import main

    caplog.set_level(logging.INFO)
    common = ["--params", str(PROJECT_ROOT / "params.yaml"), "--set", f"paths.weights={tmp_path / 'weights'}"]
    assert main(["weights", "auto", *common]) == 0  # the offline default needs none
    assert "nothing to download" in caplog.text and not (tmp_path / "weights").exists()
    caplog.clear()
    assert main(["weights", "vgg_typo", *common]) == 1
    assert "unknown weights vgg_typo" in caplog.text
    caplog.clear()
    fake = tmp_path / "mirror.pth"
    fake.write_bytes(b"not the real checkpoint")
    assert main(["weights", "sam_vit_b", "--url", fake.as_uri(), *common]) == 1  # the official sha256 is checked
    assert "does not match" in caplog.text and not (tmp_path / "weights" / "sam_vit_b_01ec64.pth").exists()


def test_a_chunk_is_cropped_as_it_is_decoded_to_the_pixels_of_cropping_it_whole(tmp_path, monkeypatch):
    """crop_chunk crops and resizes each few decoded frames (never the chunk at the video's size): the same pixels
    as cropping the whole decoded range, here over several decode chunks."""
    from cpabanim.data import movie
    from cpabanim.data.video import read_movie_range, resize_frames

    video = write_mp4(tmp_path / "AAAAAAAAAAA.mp4", moving_square_video(20, 64, seed=4), fps=25)
    chunk = sources.Chunk("AAAAAAAAAAA", "id001", 3, 17, (8, 4, 56, 60), 64, 64, 25.0, "train")
    monkeypatch.setattr(movie, "DECODE_CHUNK", 3)
    streamed = sources.crop_chunk(video, chunk, 32)
    whole = read_movie_range(video, 3, 17)[:, 4:60, 8:56]
    assert streamed.shape == (14, 32, 32, 3) and np.array_equal(streamed, resize_frames(whole, 32))


def _vox_png_copy(root, size: int):
    """A small vox-png copy below a top folder: frame folders of 8-bit RGB PNGs at ``size`` (stored as they are),
    one frame folder at another size (decoded and resized), one mp4, and a note beside the videos."""
    from cpabanim.data.archive import encode_png

    videos = {"train": ["id1.a", "id1.b", "id2.a"], "test": ["id3.a"]}
    for seed, (split, name) in enumerate((s, n) for s, ns in videos.items() for n in ns):
        for index, frame in enumerate(moving_square_video(4, size if name != "id1.b" else 40, seed=seed)):
            (root / "vox-png" / split / name).mkdir(parents=True, exist_ok=True)
            (root / "vox-png" / split / name / f"{index:07d}.png").write_bytes(encode_png(frame))
    write_mp4(root / "vox-png" / "train" / "id4.mp4", moving_square_video(5, 48, seed=9))
    (root / "vox-png" / "README.txt").write_text("a copy")
    return root / "vox-png"


def test_a_copy_as_a_folder_a_zip_or_a_tar_gives_the_same_dataset(params, tmp_path):
    """data.source_dir: the field's layout as a folder (read in place), a zip (read in place, nothing unpacked) and a
    tar (unpacked once by download) give the same archives; PNG frames already at frame_size keep their bytes."""
    import shutil
    import tarfile

    from cpabanim.data.archive import FrameArchive
    from cpabanim.data.layout import video_path
    from tests.data.helpers import processed_archives

    def _pngs(processed, video):
        with FrameArchive(video_path(processed, *video.split("/"))) as stored:
            return [stored.png(i) for i in range(len(stored))]

    folder = _vox_png_copy(tmp_path / "copy", 32)
    shutil.make_archive(str(tmp_path / "copy-zip"), "zip", tmp_path / "copy")
    with tarfile.open(tmp_path / "copy.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname="vox-png")
    params["data"].update(source="vox", frame_size=32, shards=2)
    results = {}
    for kind, source in (("folder", folder), ("zip", tmp_path / "copy-zip.zip"), ("tar", tmp_path / "copy.tar.gz")):
        raw, processed = tmp_path / kind / "raw", tmp_path / kind / "processed"
        params["data"]["source_dir"] = str(source)
        manifest = download.download(params["data"], raw)
        assert len(manifest["fetched"]) == 5, manifest
        preprocess.preprocess(params["data"], params["seed"], raw, processed)
        results[kind] = {video: _pngs(processed, video) for video in processed_archives(processed)}
    assert results["folder"] == results["zip"] == results["tar"]  # the frames' bytes (the records name the source)
    assert sorted(results["folder"]) == ["test/id3.a", "train/id1.a", "train/id1.b", "train/id2.a", "train/id4"]
    assert not list((tmp_path / "zip" / "raw").rglob("*.png"))  # the zip was not unpacked
    originals = [p.read_bytes() for p in sorted((folder / "train" / "id1.a").iterdir())]
    assert results["zip"]["train/id1.a"] == originals
    assert processed_video(tmp_path / "zip" / "processed", "train", "id1.b").shape == (4, 32, 32, 3)  # resized
