"""The report's video page: every experiment's reconstructions and animations side by side, playing together.

:func:`write_videos_page` writes one offline HTML page (no CDN, no external script or style) and beside it a
``videos/`` folder (rewritten each time) with a copy of every file it shows. One row per reconstructed test video
(source frame 0 | driving | each experiment's prediction) and one per animation pair and mode (source image |
driving | each experiment's animation). The stages' viewing files are strips, source | driving | result: a cell
shows one panel of a strip (CSS ``object-fit: cover``), so files are copied, never re-encoded. Without an MP4
(``reconstruct.mp4: false``) a cell shows the GIF (an ``<img>``, not in sync), else the middle PNG frame, else
"no video": nothing missing is an error. A row's MP4s play, pause and seek together (a small inline script: one
control per row, one for the page).

Each experiment is shown for one seed, named in every label ("tps, seed 0"): the lowest seed all experiments have
(every column then shows the same seed), else each one's lowest. Names from data are read only when
:func:`~cpabanim.data.names.safe_name` accepts them (one name: no ``/``, not ``..``; others are skipped, listed)
and copied under their safe name; every path written must resolve inside ``videos/``
(:func:`~cpabanim.files.contained_path`, links followed; a ``videos`` link is replaced).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
from pathlib import Path
from typing import NamedTuple

from cpabanim.animation.reconstruct_records import EXPLAIN_DIR
from cpabanim.data.layout import split_videos
from cpabanim.data.names import safe_name
from cpabanim.errors import DataError
from cpabanim.reporting.copies import Copier, Member, frames_of, inside, test_frames, usable

log = logging.getLogger(__name__)

PANELS = {"left": "0% 50%", "middle": "50% 50%", "right": "100% 50%"}  # object-position of a strip's panel
RECONSTRUCTION = "reconstruction: source (frame 0) | driving | each experiment's prediction"
ANIMATION = "animation: source image | driving | each experiment's animation"
Media = dict[str, dict[int, dict[str, Path]]]  # experiment -> seed -> {"reconstruction": dir, "animation": dir}


class Cell(NamedTuple):
    """One labelled picture of a row: ``src`` (a URL relative to the page; "" = nothing to show), a ``video`` or an
    image, ``panel`` (left / middle / right of a strip; "" = the whole file), a ``note`` and ``links``."""

    label: str
    src: str = ""
    video: bool = False
    panel: str = ""
    note: str = ""
    links: tuple[tuple[str, str], ...] = ()


class Row(NamedTuple):
    title: str
    cells: tuple[Cell, ...]


class Run(NamedTuple):  # the run shown of an experiment: "tps, seed 0", its files' name, its stage folders
    label: str
    tag: str
    folders: dict[str, Path]


class VideosPage(NamedTuple):
    """What :func:`write_videos_page` wrote: page, seed per experiment, rows, copied files, skipped names."""

    page: Path
    seeds: dict[str, int]
    rows: list[Row]
    files: list[Path]
    skipped: list[str]


def chosen_seeds(media: Media) -> dict[str, int]:
    """experiment -> the seed shown: the lowest all experiments share, else each one's lowest (none: no runs)."""
    seeds = {name: set(runs) for name, runs in media.items() if runs}
    common = set.intersection(*seeds.values()) if seeds else set()
    return {name: min(common) if common else min(found) for name, found in seeds.items()}


def result_cell(copier: Copier, label: str, folder: Path | None, stem: str, where: tuple[str, ...]) -> Cell:
    """The result panel of ``folder/<stem>.mp4``, else of ``<stem>.gif``, else the middle frame of ``<stem>/``."""
    for suffix, note in ((".mp4", ""), (".gif", "GIF, not in sync")):
        if (path := inside(folder, stem + suffix)) and path.is_file():
            return Cell(label, copier.copy(path, *where), video=suffix == ".mp4", panel="right", note=note)
    return still_cell(copier, label, frames_of(inside(folder, stem)), where)


def still_cell(copier: Copier, label: str, frames: list[Path | Member], where: tuple[str, ...]) -> Cell:
    """The middle frame of ``frames`` as a still, or "no video" without frames."""
    if not frames:
        return Cell(label, note="no video")
    index = len(frames) // 2
    src = copier.copy(frames[index], *where[:-1], f"{where[-1]}.frame{index:05d}")
    return Cell(label, src, note=f"no video: frame {index} of {len(frames)}")


def panel_of(results: list[Cell], label: str, panel: str) -> Cell | None:
    """The ``panel`` of the first result strip (an MP4 if any result has one, else a GIF), or None."""
    strips = sorted((c for c in results if c.panel), key=lambda c: not c.video)
    return Cell(label, strips[0].src, video=strips[0].video, panel=panel) if strips else None


def explanation_links(copier: Copier, run: Run, video: str, where: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Copies of the explanation pictures of ``video`` in ``run``'s reconstruction folder, as (name, URL) links."""
    folder = inside(run.folders.get("reconstruction"), EXPLAIN_DIR, safe_name(video))  # as reconstruct names it
    pictures = sorted((p for p in frames_of(folder) if usable(p.name)), key=lambda p: p.stem != "overview")
    return tuple((p.stem, copier.copy(p, *where, "explain", run.tag, p.stem)) for p in pictures)


def read_json(folder: Path | None, name: str) -> dict:
    """The JSON object file ``folder/name``, or {} when it is missing or not a JSON object."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((folder / name).read_text()) if folder is not None else {}
        return data if isinstance(data, dict) else {}
    return {}


def listed(record: dict, key: str) -> list:
    """``record[key]`` when it is a list, else []."""
    return record[key] if isinstance(record.get(key), list) else []


def video_names(runs: list[Run]) -> list[str]:
    """The reconstructed videos of ``runs``: the names in each ``index.json`` (else its frame folders), sorted."""
    names: set[str] = set()
    for run in runs:
        folder = run.folders.get("reconstruction")
        recorded = read_json(folder, "index.json").get("videos")
        if isinstance(recorded, dict):
            names.update(recorded)
        elif folder is not None and folder.is_dir():
            names.update(p.name for p in folder.iterdir() if p.name != EXPLAIN_DIR and frames_of(p))
    return sorted(names)


def reconstruction_rows(
    runs: list[Run], tests: dict[str, Path], copier: Copier, limit: int, skipped: list[str]
) -> list[Row]:
    """One row per reconstructed test video (the first ``limit``, 0 = all); unusable names go to ``skipped``."""
    names = video_names(runs)
    skipped += [f"reconstruction video {n!r}" for n in names if not usable(n)]
    rows = []
    for number, video in enumerate([n for n in names if usable(n)][: limit or None]):
        where = ("reconstruction", f"{number:03d}_{video}")  # numbered: two names may share a safe name
        results = [
            result_cell(copier, run.label, run.folders.get("reconstruction"), video, (*where, run.tag))._replace(
                links=explanation_links(copier, run, video, where)
            )
            for run in runs
        ]
        test = test_frames(tests, video)
        source = Cell("source (frame 0)", copier.copy(test[0], *where, "source")) if test else None
        source = source or panel_of(results, "source (frame 0)", "left") or Cell("source (frame 0)", note="no image")
        driving = panel_of(results, "driving", "middle") or still_cell(copier, "driving", test, (*where, "driving"))
        rows.append(Row(video, (source, driving, *results)))
    return rows


def pair_list(runs: list[Run]) -> tuple[list[dict], list[str]]:
    """The pairs of every run's ``pairs.json`` (by name, the first run's first) and their modes, in order."""
    pairs: dict[str, dict] = {}
    modes: list[str] = []
    for run in runs:
        record = read_json(run.folders.get("animation"), "pairs.json")
        for pair in listed(record, "pairs"):
            if isinstance(pair, dict) and isinstance(pair.get("name"), str):
                pairs.setdefault(pair["name"], pair)
        modes += [m for m in listed(record, "modes") if isinstance(m, str) and m not in modes]
    return list(pairs.values()), modes


def source_image(copier: Copier, runs: list[Run], tests: dict[str, Path], pair: dict) -> Cell | None:
    """The pair's ``source.png`` from the first run that has it, else its frame of the processed test video."""
    found = [f for run in runs if (f := inside(run.folders.get("animation"), pair["name"], "source.png"))]
    found = [f for f in found if f.is_file()]
    frames, frame = test_frames(tests, pair.get("source")), pair.get("source_frame")
    if not found and isinstance(frame, int) and 0 <= frame < len(frames):
        found = [frames[frame]]
    return Cell("source image", copier.copy(found[0], "animation", pair["name"], "source")) if found else None


def animation_rows(
    runs: list[Run], tests: dict[str, Path], copier: Copier, limit: int, skipped: list[str]
) -> list[Row]:
    """One row per animation pair (the first ``limit``, 0 = all) and mode; unusable names go to ``skipped``."""
    pairs, modes = pair_list(runs)
    skipped += [f"animation mode {m!r}" for m in modes if not usable(m)]
    skipped += [f"animation pair {p['name']!r}" for p in pairs if not usable(p["name"])]
    modes, pairs = [m for m in modes if usable(m)], [p for p in pairs if usable(p["name"])][: limit or None]
    rows = []
    for pair in pairs:
        name = pair["name"]
        title = f"{name}: {pair.get('source')} (frame {pair.get('source_frame')}) driven by {pair.get('driving')}"
        source = source_image(copier, runs, tests, pair)
        for mode in modes:
            where = ("animation", name, mode)
            folders = [(run, inside(run.folders.get("animation"), name)) for run in runs]
            results = [result_cell(copier, run.label, folder, mode, (*where, run.tag)) for run, folder in folders]
            shown = source or panel_of(results, "source image", "left") or Cell("source image", note="no image")
            frames = test_frames(tests, pair.get("driving"))
            driving = panel_of(results, "driving", "middle") or still_cell(
                copier, "driving", frames, (*where, "driving")
            )
            rows.append(Row(f"{title}, {mode}", (shown, driving, *results)))
    return rows


# ------------------------------------------------------------------------------------------------ the page

STYLE = (
    "body{font-family:sans-serif;margin:1.5em}.row{border-top:1px solid #ccc;padding:.6em 0}.title{font-weight:bold}"
    ".head{display:flex;gap:.6em;align-items:center;margin-bottom:.4em}.cells{display:flex;flex-wrap:wrap;gap:.6em}"
    "figure{margin:0;width:200px}figure video,figure img,figure .none{display:block;width:100%;aspect-ratio:1;"
    "background:#eee;object-fit:contain}figure .none{display:flex;align-items:center;justify-content:center;color:#777}"
    "figcaption{font-size:.8em;margin-top:.2em;overflow-wrap:anywhere}.note{color:#a40}"
    "figcaption a{display:inline-block;margin-right:.4em}input.seek{width:16em}"
)
SCRIPT = """
const rows = [...document.querySelectorAll('.row')], videos = r => [...r.querySelectorAll('video')];
const at = (x, t) => { x.currentTime = Math.min(t, x.duration || t); };
function play(r) { const v = videos(r); v.forEach(x => { at(x, v[0].currentTime); x.play(); }); }
function pause(r) { videos(r).forEach(x => x.pause()); }
function seek(r, f) { const v = videos(r); if (v.length && v[0].duration) v.forEach(x => at(x, f * v[0].duration)); }
rows.forEach(r => {
  const v = videos(r), button = r.querySelector('.play'), slider = r.querySelector('.seek'); if (!v.length) return;
  button.onclick = () => v[0].paused ? play(r) : pause(r);
  slider.oninput = () => seek(r, slider.value / 1000);
  v[0].onplay = v[0].onpause = () => { button.textContent = v[0].paused ? 'play' : 'pause'; };
  v[0].ontimeupdate = () => {  // the first video leads: the others follow it within 0.15 s
    if (v[0].duration) slider.value = 1000 * v[0].currentTime / v[0].duration;
    v.forEach(x => { if (!x.paused && Math.abs(x.currentTime - v[0].currentTime) > 0.15) at(x, v[0].currentTime); });
  };
  v.forEach(x => { x.onloadeddata = () => { x.dataset.state = 'loaded'; }; x.onerror = () => { x.dataset.state =
    'error'; x.closest('figure').querySelector('.note').textContent = 'this browser cannot play this file'; }; });
});
document.getElementById('play-all').onclick = () => rows.forEach(play);
document.getElementById('pause-all').onclick = () => rows.forEach(pause);
document.getElementById('restart-all').onclick = () => rows.forEach(r => { seek(r, 0); play(r); });
"""


def cell_html(cell: Cell) -> str:
    """One ``<figure>``: the video, image or "no video" box, and its caption (label, note, links)."""
    style = f" style='object-fit:cover;object-position:{PANELS[cell.panel]}'" if cell.panel else ""
    src, label = html.escape(cell.src, quote=True), html.escape(cell.label)
    if cell.video:
        media = f"<video src='{src}' muted playsinline loop preload='metadata' title='{label}'{style}></video>"
    elif cell.src:
        media = f"<img src='{src}' alt='{label}' title='{label}'{style}>"
    else:
        media = f"<div class='none'>{html.escape(cell.note or 'no video')}</div>"
    links = "".join(f"<a href='{html.escape(url, quote=True)}'>{html.escape(n)}</a>" for n, url in cell.links)
    note = f"<span class='note'>{html.escape(cell.note)}</span>"
    return (
        f"<figure>{media}<figcaption><b>{label}</b> {note}{links and '<br>explanation: ' + links}</figcaption></figure>"
    )


def row_html(row: Row) -> str:
    """One row: its control (when it has videos), its title, its cells."""
    control = "<span class='note'>(no video to play in this row)</span>"
    if any(c.video for c in row.cells):
        control = "<button class='play'>play</button><input class='seek' type='range' min='0' max='1000' value='0'>"
    cells = "".join(cell_html(c) for c in row.cells)
    head = f"<div class='head'>{control}<span class='title'>{html.escape(row.title)}</span></div>"
    return f"<div class='row'>{head}<div class='cells'>{cells}</div></div>"


def page_html(seeds: dict[str, int], sections: list[tuple[str, list[Row]]], skipped: list[str]) -> str:
    """The whole page: the page's controls, what is shown (which seeds, what each column is), the sections."""
    shown = ", ".join(f"{html.escape(name)}: seed {seed}" for name, seed in seeds.items()) or "no experiment"
    notes = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
    notes = notes and f"<p>Skipped (the name would leave its folder):</p><ul>{notes}</ul>"
    body = "".join(
        f"<h2>{html.escape(title)}</h2>" + ("".join(row_html(r) for r in rows) or "<p>nothing to show</p>")
        for title, rows in sections
    )
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>cpabanim: videos</title><style>{STYLE}</style>"
    controls = "".join(f"<button id='{name}-all'>{name} all</button> " for name in ("play", "pause", "restart"))
    return (
        f"{head}</head><body><h1>cpabanim: the experiments' videos side by side</h1><p>{controls}</p>"
        f"<p>One seed per experiment ({shown}): the lowest seed all experiments have, else each one's lowest. A "
        f"row's videos play together; a GIF or a still stands in where a run wrote no MP4.</p>{notes}{body}"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_videos_page(
    media: Media, page: Path, *, processed: Path, max_videos: int = 0, max_pairs: int = 0
) -> VideosPage:
    """Write ``page`` and its ``videos/`` folder (rewritten) from ``media`` (experiment -> seed -> {"reconstruction":
    folder, "animation": folder}; either folder may be missing) and the processed dataset ``processed`` (the test
    videos' frames: the source frame, and a driving still where no run wrote a viewing video).

    ``max_videos`` / ``max_pairs``: the first reconstructed videos / animation pairs shown (0 = all). Returns what
    was written; unusable names are skipped (listed on the page and in :attr:`VideosPage.skipped`), never raised.
    """
    seeds = chosen_seeds(media)
    skipped = [f"experiment {name!r}" for name in seeds if not usable(name)]
    shown = [(name, seed, media[name][seed]) for name, seed in seeds.items() if usable(name)]
    runs = [Run(f"{n}, seed {k}", f"{safe_name(n)}.seed{k}", {f: Path(p) for f, p in d.items()}) for n, k, d in shown]
    copier = Copier(page)
    try:
        tests = split_videos(processed, "test")  # name -> the processed test video's file
    except DataError:  # no processed data (yet): the panels say "no image"
        tests = {}
    rows = [
        (RECONSTRUCTION, reconstruction_rows(runs, tests, copier, max_videos, skipped)),
        (ANIMATION, animation_rows(runs, tests, copier, max_pairs, skipped)),
    ]
    page.write_text(page_html(seeds, rows, skipped))
    if skipped:
        log.warning("videos page: skipped (the name would leave its folder) %s", "; ".join(skipped))
    return VideosPage(page, seeds, [row for _, section in rows for row in section], copier.files, skipped)
