"""Safe names (docs/data.md, "Names"): the rule, the way back to the dataset's names, identities, and the places
that make names (preprocess of the user's files, the field's VoxCeleb ids, animation pairs, viewing videos)."""

from __future__ import annotations

import pytest

from cpabanim.data import names, preprocess
from cpabanim.data.frames import write_viewing_videos
from cpabanim.data.layout import split_videos, video_name
from cpabanim.errors import DataError
from tests.data.helpers import folder_source_params, moving_square_video, write_frame_folder, write_mp4

URL_OR_SHELL_SPECIAL = set("#?%&=+ /\\:;*'\"$`!<>|()[]{}~^")


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("id10001#7w0IBEWc9Qw#000993#001143", "id10001.7w0IBEWc9Qw.000993.001143"),  # VoxCeleb, as FOMM names it
        ("u6rJiF-gPx8#000080#000300", "u6rJiF-gPx8.000080.000300"),  # TaiChi: no person
        ("my clip?v=2&t=100%#take", "my_clip_v_2_t_100_.take"),
        ("Zoë's (final) [cut]", "Zo__s__final___cut_"),
        ("astronaut.test003", "astronaut.test003"),  # safe already: unchanged
        ("clip.v2.final", "clip.v2.final"),
        (".hidden", "_hidden"),
        ("-rf", "_rf"),
        ("notes#tmp", "notes_tmp"),  # would end in .tmp, which every listing skips
        ("trailing#", "trailing_"),
    ],
)
def test_safe_name_rule(name, safe):
    assert names.safe_name(name) == safe
    assert names.safe_name(safe) == safe and names.is_safe(safe)  # the rule applies again without change
    assert not set(safe) & URL_OR_SHELL_SPECIAL and safe.isascii()


@pytest.mark.parametrize("bad", ["", "a/b", "../../outside", ".", ".."])
def test_a_path_or_nothing_is_not_a_name(bad):
    with pytest.raises(DataError, match="name"):
        names.safe_name(bad)


def test_identity_is_the_part_before_the_first_separator():
    assert names.identity("id10001.7w0IBEWc9Qw.000993.001143") == "id10001"
    assert names.identity("id10001#7w0IBEWc9Qw#000993#001143") == "id10001"  # the field's form: the same identity
    assert names.identity("astronaut.test003") == "astronaut"
    assert names.identity("single") == "single"
    assert names.join_parts("id10001", "7w0IBEWc9Qw", "000993") == "id10001.7w0IBEWc9Qw.000993"


def test_the_record_leads_back_to_every_original_name(tmp_path):
    originals = ["id10001#7w0IBEWc9Qw#000993#001143", "my clip?%#1", "astronaut.test003", "-x#y"]
    renamed = {names.safe_name(o): o for o in originals}
    assert len(renamed) == len(originals)
    names.write_record(tmp_path, renamed)
    # only what changed is recorded; an unchanged name is its own original
    assert set(names.read_record(tmp_path)) == {names.safe_name(o) for o in originals} - {"astronaut.test003"}
    assert [names.original_name(names.safe_name(o), tmp_path) for o in originals] == originals
    assert names.read_record(tmp_path / "no-dataset") == {}


def test_a_broken_record_is_one_clear_line(tmp_path):
    (tmp_path / names.NAMES_FILE).write_text("{not json")
    with pytest.raises(DataError, match="names.json: not readable"):
        names.read_record(tmp_path)
    (tmp_path / names.NAMES_FILE).write_text('{"a": 1}')
    with pytest.raises(DataError, match="not a mapping"):
        names.original_name("a", tmp_path)


def test_preprocess_of_the_users_files_writes_safe_names_and_records_the_originals(tmp_path):
    videos = tmp_path / "my videos"
    files = ["anna#take 1.mp4", "anna#take2.mp4", "bob?.mp4", "bob_.mp4", "dora.v2.mp4"]
    for seed, file in enumerate(files):
        write_mp4(videos / file, moving_square_video(4, 32, seed=seed))
    data, seed = folder_source_params(videos, test_fraction=0.3)
    out = tmp_path / "processed"
    manifest = preprocess.preprocess(data, seed, tmp_path / "raw", out)
    written = sorted(name for split in ("train", "test") for name in split_videos(out, split))
    assert written == ["anna.take2", "anna.take_1", "bob_", "dora.v2"]  # the dotted name keeps its dot
    assert sorted(manifest["videos"]["train"]) + sorted(manifest["videos"]["test"]) == [
        "anna.take2",
        "anna.take_1",
        "bob_",
        "dora.v2",
    ]
    # 'bob_' is bob?'s safe name already: the second one is skipped, named, never written over the first
    (skip,) = manifest["skipped"]
    assert skip["video"] == "bob_" and "'bob?'" in skip["reason"] and "same safe name" in skip["reason"]
    assert names.read_record(out) == {"anna.take_1": "anna#take 1", "anna.take2": "anna#take2", "bob_": "bob?"}
    assert names.original_name("dora.v2", out) == "dora.v2"
    from cpabanim.data.dataset import FramesDataset

    dataset = FramesDataset(out, "train", id_sampling=True)
    assert sorted(names.identity(video_name(g[0])) for g in dataset.groups) == sorted(
        {names.identity(n) for n in manifest["videos"]["train"]}
    )


def test_pairs_and_viewing_videos_of_dotted_names(tmp_path):
    from cpabanim.animation.pairs import choose_pairs

    videos = []
    for seed, name in enumerate(["astronaut.test000", "chelsea.test001", "old#name with space"]):
        videos.append(write_frame_folder(tmp_path / "test" / name, moving_square_video(3, 16, seed=seed)))
    pairs = choose_pairs(videos, 6, seed=0)
    assert len(pairs) == 6 and all(names.is_safe(p["name"]) for p in pairs)
    assert "000_" in pairs[0]["name"] and "_to_" in pairs[0]["name"]
    assert {p["source"] for p in pairs} <= {v.name for v in videos}  # the videos are found by their own names
    # <stem>.mp4 beside a dotted stem: the suffix is added, never put in place of ".test000"
    written = write_viewing_videos(moving_square_video(3, 16), tmp_path / "out" / "astronaut.test000", 5, True, True)
    assert sorted(p.name for p in written) == ["astronaut.test000.gif", "astronaut.test000.mp4"]
