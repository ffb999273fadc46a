"""Sharded data stages (docs/data.md, "Shards"): 1 shard and N give the same bytes, a killed shard redoes only the
video it was writing, the gather refuses what is not done, a smaller shard count leaves nothing behind."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cpabanim.config.layers import load_params
from cpabanim.data import layout, preprocess
from cpabanim.data.labels import mask_files
from cpabanim.data.masks import extract_masks
from cpabanim.errors import DataError
from tests.conftest import PROJECT_ROOT
from tests.data.helpers import processed_archives


def _params(tmp_path, shards: int, num_train: int = 5, frames: int = 4) -> dict:
    params = copy.deepcopy(load_params(PROJECT_ROOT / "params.yaml"))
    params["paths"] = {k: str(tmp_path / k) for k in params["paths"]}
    params["data"]["synthetic"].update(num_train=num_train, num_test=2, num_frames=frames)
    params["data"].update(frame_size=32, shards=shards)
    params["masks"]["shards"] = shards
    return params


def _index_without_files(root) -> dict:
    """The processed index less where each video is stored (which shard) and less its shard count."""
    manifest = json.loads((root / "manifest.json").read_text())
    videos = {
        s: {n: {k: v for k, v in e.items() if k != "file"} for n, e in vs.items()}
        for s, vs in manifest["videos"].items()
    }
    return {**{k: v for k, v in manifest.items() if k != "shards"}, "videos": videos}


def test_one_shard_and_n_shards_give_the_same_bytes(tmp_path):
    one, three = _params(tmp_path / "one", 1), _params(tmp_path / "three", 3)
    for params in (one, three):
        preprocess.preprocess(params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"])
        extract_masks(
            params["masks"], params["paths"]["processed"], params["paths"]["masks"], params["paths"]["weights"]
        )
    first, second = (tmp_path / "one" / "processed"), (tmp_path / "three" / "processed")
    assert processed_archives(first) == processed_archives(second) and len(processed_archives(first)) == 7
    assert _index_without_files(first) == _index_without_files(second)
    assert (first / "names.json").read_bytes() == (second / "names.json").read_bytes()
    # the videos are spread over the shards, each in the shard its name hashes to
    files = json.loads((second / "manifest.json").read_text())["videos"]
    used = {entry["file"].split("/")[1] for split in files.values() for entry in split.values()}
    assert len(used) > 1
    for split in files.values():
        for name, entry in split.items():
            assert entry["file"].startswith(f"shards/{layout.shard_name(layout.shard_of(name, 3))}/")
    masks = [
        {name: path.read_bytes() for name, path in mask_files(root.parent / "masks", "train").items()}
        for root in (first, second)
    ]
    assert masks[0] == masks[1] and len(masks[0]) == 5


def _cli(params, *args: str) -> list[str]:
    sets = [f"paths.{k}={v}" for k, v in params["paths"].items()]
    sets += [f"data.synthetic.{k}={v}" for k, v in params["data"]["synthetic"].items()]
    sets += [f"data.frame_size={params['data']['frame_size']}", f"data.shards={params['data']['shards']}"]
    return [
        sys.executable,
        "-m",
        "cpabanim",
        *args,
        "--params",
        str(PROJECT_ROOT / "params.yaml"),
        *(part for item in sets for part in ("--set", item)),
    ]


def test_a_shard_killed_in_the_middle_redoes_only_the_video_it_was_writing(tmp_path):
    """A real SIGKILL of `cpabanim preprocess --shard 0` after a few videos: the run again keeps every archive the
    killed one finished (the same file, untouched), writes the rest, and ends with the bytes of a run never killed."""
    params = _params(tmp_path / "killed", 1, num_train=24, frames=12)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run(_cli(params, "download"), env=env, check=True, capture_output=True, cwd=tmp_path)
    shard = tmp_path / "killed" / "processed" / "shards" / "000"
    job = subprocess.Popen(_cli(params, "preprocess", "--shard", "0"), env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list(shard.glob("*/*.zip"))) < 4 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    survivors = {p: p.stat().st_mtime_ns for p in shard.glob("*/*.zip")}
    assert job.returncode == -signal.SIGKILL and 4 <= len(survivors) < 26, "the shard must be killed half-way"
    assert not (shard / layout.SHARD_MARKER).exists()  # the orchestrators see it unfinished
    leftovers = [p for p in shard.rglob(".*") if p.name != ".cpabanim-output"]  # the archive being written, if any

    done = subprocess.run(_cli(params, "preprocess", "--shard", "0"), env=env, cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert {p: p.stat().st_mtime_ns for p in survivors} == survivors  # finished videos were not written again
    assert len(list(shard.glob("*/*.zip"))) == 26 and not any(p.exists() for p in leftovers)
    record = json.loads((shard / layout.SHARD_MARKER).read_text())
    assert len(record["videos"]) == 26

    whole = _params(tmp_path / "whole", 1, num_train=24, frames=12)
    preprocess.preprocess(whole["data"], whole["seed"], whole["paths"]["raw"], whole["paths"]["processed"])
    preprocess.gather(params["data"], params["seed"], params["paths"]["processed"])
    assert processed_archives(tmp_path / "killed" / "processed") == processed_archives(tmp_path / "whole" / "processed")


def test_the_gather_refuses_a_shard_not_done_or_made_with_other_parameters(tmp_path):
    params = _params(tmp_path, 2)
    data, seed, raw, out = params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"]
    preprocess.preprocess_shard(data, seed, raw, out, 0)
    with pytest.raises(DataError, match=r"shard 1 of 2 is not done: run `cpabanim preprocess --shard 1`"):
        preprocess.gather(data, seed, out)
    preprocess.preprocess_shard(data, seed, raw, out, 1)
    other = {**data, "synthetic": {**data["synthetic"], "num_frames": 5}}
    with pytest.raises(DataError, match=r"shard 0 was made with other parameters"):
        preprocess.gather(other, seed, out)
    with pytest.raises(DataError, match=r"shard 2 does not exist: data.shards = 2"):
        preprocess.preprocess_shard(data, seed, raw, out, 2)


def test_fewer_shards_later_leave_no_video_behind(tmp_path):
    params = _params(tmp_path, 4)
    data, seed, raw, out = params["data"], params["seed"], params["paths"]["raw"], params["paths"]["processed"]
    preprocess.preprocess(data, seed, raw, out)
    before = processed_archives(tmp_path / "processed")
    preprocess.preprocess({**data, "shards": 2}, seed, raw, out)
    assert sorted(p.name for p in (tmp_path / "processed" / "shards").iterdir()) == ["000", "001"]
    assert processed_archives(tmp_path / "processed") == before
    zips = list((tmp_path / "processed").rglob("*.zip"))
    assert len(zips) == len(before)  # one file per video, no copy left in a shard that no longer exists
