"""The video page on real run folders: tiny MP4s and GIFs written by the stages' own writer, PNG frames, the
processed test videos; every file the page shows is a copy beside it, names from data never leave the folder."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cpabanim.data.frames import side_by_side, write_frames, write_image, write_viewing_videos
from cpabanim.files import OWNER_FILE
from cpabanim.reporting.copies import VIDEOS_DIR
from cpabanim.reporting.videos import chosen_seeds, write_videos_page

from ..services.chromium import DevTools, chromium

SIZE, FRAMES = 32, 6
VIDEOS = ["alpha.test000", "beta.test001", "clip<b>&'x"]  # the last one: characters the page must escape
PAIRS = [("000_alpha.test000_to_beta.test001", "alpha.test000", 2, "beta.test001")]
MODES = ["relative", "standard"]
COLOURS = {"cpab": (200, 60, 60), "tps": (60, 160, 60), "ablation": (60, 60, 200)}


def moving_square(colour: tuple[int, int, int], frames: int = FRAMES, shift: int = 0) -> np.ndarray:
    """uint8 (T, S, S, 3): a light background and a square of ``colour`` moving left to right."""
    video = np.full((frames, SIZE, SIZE, 3), 235, dtype=np.uint8)
    for t in range(frames):
        x = (shift + 4 * t) % (SIZE - 10)
        video[t, 10:20, x : x + 10] = colour
    return video


def write_processed(root: Path) -> Path:
    for number, name in enumerate(VIDEOS):
        write_frames(moving_square((30, 30, 30), shift=5 * number), root / "test" / name)
    return root


def write_run(folder: Path, experiment: str, *, mp4: bool = True, gif: bool = True, frames_only: str = "") -> dict:
    """One (experiment, seed) run's reconstruction/ and animation/ folders as the stages write them (mp4 / gif:
    reconstruct.mp4 / .gif); the animation mode ``frames_only`` gets PNG frames but no viewing file."""
    recon, anim = folder / "reconstruction", folder / "animation"
    for number, name in enumerate(VIDEOS):
        driving, predicted = moving_square((30, 30, 30), shift=5 * number), moving_square(COLOURS[experiment])
        write_frames(predicted, recon / name)
        write_viewing_videos(side_by_side(driving[0], driving, predicted), recon / name, 10.0, mp4, gif)
    (recon / "index.json").write_text(json.dumps({"videos": {n: {"frames": FRAMES} for n in VIDEOS}}))
    for figure in ("overview", "flow"):  # the explanation of the first video (reconstruct.EXPLAIN_DIR)
        write_image(moving_square(COLOURS[experiment])[0], recon / "explain" / VIDEOS[0] / f"{figure}.png")
    pairs = [{"name": n, "source": s, "source_frame": f, "driving": d, "frames": FRAMES} for n, s, f, d in PAIRS]
    for pair in pairs:
        source = moving_square((30, 30, 30))[pair["source_frame"]]
        write_image(source, anim / pair["name"] / "source.png")
        for mode in MODES:
            animated = moving_square(COLOURS[experiment], shift=3)
            write_frames(animated, anim / pair["name"] / mode)
            if mode != frames_only:
                strip = side_by_side(source, moving_square((30, 30, 30), shift=5), animated)
                write_viewing_videos(strip, anim / pair["name"] / mode, 10.0, mp4=True, gif=False)
    (anim / "pairs.json").write_text(json.dumps({"pairs": pairs, "modes": MODES, "skipped_modes": {}}))
    return {"reconstruction": recon, "animation": anim}


class Elements(HTMLParser):
    """Every start tag of a page: (tag, attributes)."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def of(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parsed(page: Path) -> Elements:
    elements = Elements()
    elements.feed(page.read_text())
    return elements


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """Three experiments: cpab (seeds 0, 1; MP4 + GIF), tps (seeds 0, 2; GIF only, one animation mode as frames
    only), ablation (seed 0, one video without any viewing file or frames)."""
    root = tmp_path_factory.mktemp("videos")
    processed = write_processed(root / "processed")
    media = {
        "cpab": {seed: write_run(root / "outputs" / "cpab" / f"seed{seed}", "cpab") for seed in (1, 0)},
        "tps": {seed: write_run(root / "outputs" / "tps" / f"seed{seed}", "tps", mp4=False) for seed in (2, 0)},
        "ablation": {0: write_run(root / "outputs" / "ablation" / "seed0", "ablation", frames_only="standard")},
    }
    shutil.rmtree(media["ablation"][0]["reconstruction"] / VIDEOS[1])
    for suffix in (".mp4", ".gif"):
        (media["ablation"][0]["reconstruction"] / f"{VIDEOS[1]}{suffix}").unlink()
    page = root / "outputs" / "report" / "videos.html"
    return {"root": root, "media": media, "processed": processed, "page": page, "result": None}


def written(site: dict):
    if site["result"] is None:
        site["result"] = write_videos_page(site["media"], site["page"], processed=site["processed"])
    return site["result"]


def test_every_file_the_page_shows_is_a_copy_beside_it_and_nothing_is_fetched(site):
    result = written(site)
    page, elements = site["page"], parsed(site["page"])
    videos, images, links = elements.of("video"), elements.of("img"), elements.of("a")
    assert len(videos) >= len(VIDEOS) * 2 and images and links
    folder = (page.parent / VIDEOS_DIR).resolve()
    for attrs in [*videos, *images]:
        target = (page.parent / attrs["src"]).resolve()
        assert target.is_file() and target.is_relative_to(folder), attrs["src"]
    for attrs in links:
        assert (page.parent / attrs["href"]).resolve().is_file(), attrs["href"]
    assert all({"muted", "playsinline", "loop"} <= set(attrs) for attrs in videos)
    assert not elements.of("link") and all("src" not in attrs for attrs in elements.of("script"))
    assert "http" not in page.read_text()
    shown = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != OWNER_FILE)
    assert sorted(result.files) == shown  # every file copied, beside the folder's ownership mark
    copied = page.parent / videos[0]["src"]  # a copy, byte for byte, of a stage's viewing file
    assert any(copied.read_bytes() == original.read_bytes() for original in site["root"].rglob("*.mp4"))


def test_each_experiment_shows_its_lowest_common_seed_named_in_every_label(site):
    result = written(site)
    assert result.seeds == {"cpab": 0, "tps": 0, "ablation": 0}
    text = site["page"].read_text()
    assert "cpab, seed 0" in text and "seed 1" not in text and "seed 2" not in text
    for row in result.rows:
        assert [c.label for c in row.cells[2:]] == ["cpab, seed 0", "tps, seed 0", "ablation, seed 0"]
        assert all(cell.label for cell in row.cells)
    assert chosen_seeds({"a": {1: {}, 2: {}}, "b": {2: {}, 3: {}}}) == {"a": 2, "b": 2}
    assert chosen_seeds({"a": {3: {}, 1: {}}, "b": {2: {}}, "c": {}}) == {"a": 1, "b": 2}


def test_one_row_per_video_and_per_pair_and_mode(site):
    rows = written(site).rows
    assert [r.title for r in rows[: len(VIDEOS)]] == sorted(VIDEOS)
    assert len(rows) == len(VIDEOS) + len(PAIRS) * len(MODES)
    assert all(len(r.cells) == 2 + 3 for r in rows)
    assert all(r.cells[1].video and r.cells[1].panel == "middle" for r in rows)  # driving: the first MP4's middle
    assert rows[0].cells[0].src.endswith("source.png") and not rows[0].cells[0].video


def test_runs_without_mp4_fall_back_to_gif_frames_or_no_video(site):
    rows = {r.title: r for r in written(site).rows}
    cpab, tps, ablation = rows[VIDEOS[1]].cells[2:]
    assert cpab.video and cpab.src.endswith(".mp4") and cpab.panel == "right"
    assert not tps.video and tps.src.endswith(".gif") and "GIF" in tps.note
    assert not ablation.src and ablation.note == "no video"
    standard = next(r for t, r in rows.items() if t.endswith(", standard"))
    frames = standard.cells[4]
    assert frames.src.endswith(".png") and frames.note == f"no video: frame {FRAMES // 2} of {FRAMES}"
    text = site["page"].read_text()
    assert "<div class='none'>no video</div>" in text and "(no video to play in this row)" not in text


def test_names_are_escaped_and_explanations_linked(site):
    result = written(site)
    text = site["page"].read_text()
    assert "clip&lt;b&gt;&amp;&#x27;x" in text and "clip<b>" not in text
    assert all(set(p.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-") for p in result.files)
    first = next(r for r in result.rows if r.title == VIDEOS[0])
    assert [name for name, _ in first.cells[2].links] == ["overview", "flow"]
    assert not next(r for r in result.rows if r.title == VIDEOS[1]).cells[2].links


def test_hostile_names_stay_inside_their_folders_and_are_listed(tmp_path):
    processed = write_processed(tmp_path / "processed")
    run = write_run(tmp_path / "outputs" / "cpab" / "seed0", "cpab")
    index = json.loads((run["reconstruction"] / "index.json").read_text())
    index["videos"].update({"../../outside": {}, "..": {}})
    (run["reconstruction"] / "index.json").write_text(json.dumps(index))
    record = json.loads((run["animation"] / "pairs.json").read_text())
    record["pairs"].append({"name": "../escape", "source": "../x", "source_frame": 0, "driving": "../y"})
    record["modes"].append("../mode")
    (run["animation"] / "pairs.json").write_text(json.dumps(record))
    page = tmp_path / "outputs" / "report" / "videos.html"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "stale").mkdir(parents=True)
    (elsewhere / "stale" / "old.mp4").write_bytes(b"old")
    page.parent.mkdir(parents=True)
    (page.parent / VIDEOS_DIR).symlink_to(elsewhere, target_is_directory=True)  # a link must not lead the copies
    before = {p for p in tmp_path.rglob("*") if VIDEOS_DIR not in p.relative_to(tmp_path).parts}

    result = write_videos_page({"cpab": {0: run}, "../evil": {0: run}}, page, processed=processed)

    after = {p for p in tmp_path.rglob("*") if VIDEOS_DIR not in p.relative_to(tmp_path).parts}
    assert after - before == {page}  # everything else went into videos/
    assert sorted(p.relative_to(elsewhere).as_posix() for p in elsewhere.rglob("*")) == ["stale", "stale/old.mp4"]
    folder = page.parent / VIDEOS_DIR
    assert folder.is_dir() and not folder.is_symlink() and not (folder / "stale").exists()  # rewritten
    assert all(p.resolve().is_relative_to(folder.resolve()) for p in result.files)
    assert sorted(result.skipped) == sorted(
        [
            "experiment '../evil'",
            "reconstruction video '..'",
            "reconstruction video '../../outside'",
            "animation mode '../mode'",
            "animation pair '../escape'",
        ]
    )
    assert "Skipped (the name would leave its folder)" in page.read_text()
    assert "../" not in "".join(a.get("src") or a.get("href") or "" for _, a in parsed(page).tags)


def test_files_the_pipeline_linked_into_a_run_folder_are_shown(tmp_path):
    """DVC's symlink cache (``cache.type: symlink``) leaves links in the run folders: followed, copied."""
    processed = write_processed(tmp_path / "processed")
    run = write_run(tmp_path / "run", "cpab")
    cached = tmp_path / "cache" / "ab12"
    cached.parent.mkdir()
    shutil.move(run["reconstruction"] / f"{VIDEOS[0]}.mp4", cached)
    (run["reconstruction"] / f"{VIDEOS[0]}.mp4").symlink_to(cached)
    result = write_videos_page({"cpab": {0: run}}, tmp_path / "report" / "videos.html", processed=processed)
    cell = next(r for r in result.rows if r.title == VIDEOS[0]).cells[2]
    assert cell.video and (tmp_path / "report" / cell.src).read_bytes() == cached.read_bytes()


def test_a_limit_keeps_the_first_videos_and_no_run_means_empty_sections(tmp_path):
    processed = write_processed(tmp_path / "processed")
    run = write_run(tmp_path / "run", "cpab")
    page = tmp_path / "report" / "videos.html"
    result = write_videos_page({"cpab": {0: run}}, page, processed=processed, max_videos=1, max_pairs=1)
    assert [r.title for r in result.rows][:2] == [
        sorted(VIDEOS)[0],
        f"{PAIRS[0][0]}: alpha.test000 (frame 2) driven by beta.test001, relative",
    ]
    empty = write_videos_page({"cpab": {}}, page, processed=processed)
    assert empty.rows == [] and empty.files == [] and page.read_text().count("nothing to show") == 2


@pytest.mark.skipif(chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_chromium_decodes_every_video_of_the_page(site, tmp_path):
    """The page's script marks each video ``data-state="loaded"`` once the browser decoded its first frame. Waited
    for in real time: a virtual-time budget (``--dump-dom``) ran out before the decoders did on a loaded machine."""
    written(site)
    browser = DevTools(chromium(), tmp_path / "chromium.log", flags=("--mute-audio",))
    states = "[...document.querySelectorAll('video')].map(v => v.dataset.state || 'none')"
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=site["page"].as_uri())
        browser.wait_for("document.readyState === 'complete'")
        assert browser.wait_for(f"(s => s.length > 0 && s.every(x => x === 'loaded'))({states})", timeout=120)
    finally:
        browser.close()
