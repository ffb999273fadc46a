"""The report page opens with what a reader came for: the headline metrics with the verdicts against the reference
in one table that fits the page, the videos one click away, everything else folded below; a relative difference
only where it means something."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpabanim.reporting.comparison import comparison_tables
from cpabanim.reporting.headline import HEADLINE_METRICS, SHORT_UNDECIDED, first_screen
from cpabanim.reporting.page import write_html
from cpabanim.reporting.stats import clear_of_zero

from ..services.chromium import DevTools, chromium

VIDEOS, PAIRS, SEEDS = 8, 8, 2
pytestmark = pytest.mark.filterwarnings("error")


def run_rows(l1_shift: float, transfer: float, mkr_hits: int, rng: np.random.Generator) -> list[dict[str, str]]:
    """The per-video rows of one run as the report reads them back (strings): L1 ``l1_shift`` from a common level,
    a transfer score around ``transfer`` (can be below 0), an MKR that is 0 except on ``mkr_hits`` videos."""
    rows = []
    for v in range(VIDEOS):
        l1 = 0.05 + 0.01 * v + l1_shift + 0.0005 * rng.standard_normal()
        mkr = 0.1 if v < mkr_hits else 0.0
        rows.append({"part": "reconstruction", "video": f"id{v}#clip", "mode": "", "frames": "10", "l1": str(l1)})
        rows[-1].update({"mkr": str(mkr), "baseline_l1": "0.2", "baseline_mkr": "0"})
    for p in range(PAIRS):
        score = transfer + 0.003 * (p - (PAIRS - 1) / 2) + 0.002 * rng.standard_normal()  # pairs differ, mean kept
        rows.append({"part": "animation", "video": f"pair{p}", "mode": "relative", "frames": "8"})
        rows[-1].update({"transfer_motion": str(score), "baseline_transfer_motion": "0"})
    return rows


def pooled(rows: list[dict[str, str]]) -> dict[str, float]:
    def mean(part: str, column: str) -> float:
        return float(np.mean([float(r[column]) for r in rows if r["part"] == part]))

    out = {"recon/l1": mean("reconstruction", "l1"), "recon/mkr": mean("reconstruction", "mkr")}
    out["anim/relative/transfer_motion"] = mean("animation", "transfer_motion")
    out.update({"baseline/copy_source/recon/l1": 0.2, "baseline/copy_source/recon/mkr": 0.0})
    out["baseline/source_unchanged/anim/transfer_motion"] = 0.0
    return out


@pytest.fixture(scope="module")
def tables():
    """cpab (reference: transfer_motion just below 0, MKR 0 on most videos), tps (L1 0.01 lower, transfer 0.03
    lower), and a copy of cpab (no difference)."""
    rng = np.random.default_rng(0)
    per_video = {
        "cpab": {s: run_rows(0.0, -0.005, 1, rng) for s in range(SEEDS)},
        "tps": {s: run_rows(-0.01, -0.035, 2, rng) for s in range(SEEDS)},
    }
    per_video["copy"] = per_video["cpab"]
    runs = {name: {s: pooled(rows) for s, rows in seeds.items()} for name, seeds in per_video.items()}
    return comparison_tables(runs, per_video, "cpab")


def comparison_cells(tables, experiment: str, metric: str) -> dict:
    row = next(r for r in tables.comparison.rows if r[0].text == experiment and r[1].name == metric)
    return dict(zip(tables.comparison.columns, row))


def test_clear_of_zero():
    assert clear_of_zero(np.array([0.05, 0.06, 0.07, 0.08]))
    assert clear_of_zero(np.array([3.0, 3.0]))  # no spread, well above 0
    assert not clear_of_zero(np.array([0.0, 0.0, 0.0, 0.1]))  # mostly 0: the mean is within 2 standard errors
    assert not clear_of_zero(np.array([-0.02, -0.01, -0.03]))
    assert not clear_of_zero(np.array([0.05]))  # one unit: no standard error


def test_relative_difference_where_it_means_something(tables):
    """recon/l1 cannot be negative and its reference is far above 0: the % is shown, with its number."""
    l1 = comparison_cells(tables, "tps", "recon/l1")
    assert re.fullmatch(r"-\d+(\.\d+)? %", l1["relative"].text)
    relative = dict(l1["relative"].numbers)["%"]
    assert relative == pytest.approx(100 * dict(l1["difference"].numbers)["difference"] / 0.085, rel=0.05)
    assert l1["verdict"].text == "better"


def test_no_relative_difference_for_a_reference_at_or_below_zero(tables):
    """A transfer score can be negative: with a reference just below 0 a % would be huge and of the wrong sign
    (-0.03 against -0.005 reads +600 %); an MKR that is 0 on most videos is not clearly away from 0. Both show the
    absolute difference only."""
    transfer = comparison_cells(tables, "tps", "anim/relative/transfer_motion")
    assert transfer["relative"].text == "—" and not transfer["relative"].numbers
    assert dict(transfer["difference"].numbers)["difference"] == pytest.approx(-0.03, abs=0.002)
    assert transfer["verdict"].text == "worse"
    mkr = comparison_cells(tables, "tps", "recon/mkr")
    assert mkr["relative"].text == "—" and not mkr["relative"].numbers
    assert "relative" in tables.comparison.note and "clearly above 0" in tables.comparison.note


def test_first_screen_has_the_headline_metrics_and_the_verdicts(tables):
    fragment = first_screen(tables)
    headers = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", fragment)
    metrics = [m for m in HEADLINE_METRICS if m in tables.summary.columns]
    assert metrics == ["recon/l1", "anim/relative/transfer_motion"]  # recon/mkr: in the full tables only
    assert [h.split(" ")[0] for h in headers] == ["experiment", "seeds", *metrics]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", fragment.split("<tbody>")[1].split("</tbody>")[0])
    assert [re.search(r"<td>(.*?)</td>", r).group(1) for r in rows] == ["cpab", "tps", "copy", "baseline: no motion"]
    cpab, tps, copy, baseline = rows
    assert cpab.count(">reference<") == 2  # the reference's cells say so
    mean_sd = html.escape(tables.summary.rows[1][tables.summary.columns.index("recon/l1")].text)
    assert mean_sd in tps and " ± " in mean_sd
    assert '<span class="better">better</span>' in tps and '<span class="worse">worse</span>' in tps
    assert tps.count(" %") == 1  # the relative difference of L1, none for the transfer score
    assert SHORT_UNDECIDED in copy and "no difference detectable with 8 videos × 2 seeds" in fragment
    assert "better" not in baseline and "reference" not in baseline
    assert "Evaluated on: 8 videos, 80 frames; 8 pairs, 64 frames per seed" in fragment


def test_first_screen_without_a_reference(tables):
    from dataclasses import replace

    alone = replace(tables, comparison=None, reference=None, reference_note="No comparison with a reference: ...")
    fragment = first_screen(alone)
    assert "better" not in fragment and ">reference<" not in fragment and "No comparison with a reference" in fragment


def write_page(tables, folder: Path) -> Path:
    outputs = {"videos_html": folder / "videos.html"}
    for key in ("metrics_png", "loss_png", "samples_png"):
        outputs[key] = folder / f"{key}.png"
        Image.new("RGB", (40, 30), "white").save(outputs[key])
    table_md = "| experiment | model.motion |\n|---|---|\n| cpab | cpab |\n| tps | tps |"
    write_html(table_md, tables, outputs, folder / "index.html")
    return folder / "index.html"


def test_page_opens_with_the_videos_link_and_the_headline_and_folds_the_rest(tables, tmp_path):
    page = write_page(tables, tmp_path).read_text()
    videos, headline = page.index("href='videos.html'"), page.index('data-table="headline"')
    first_fold = page.index("<details")
    assert videos < headline < first_fold  # the videos one click away, the headline on the first screen
    folded = page[first_fold:]
    for name in ("summary", "comparison", "per_seed"):  # every full table is below, folded
        assert f'data-table="{name}"' in folded and f'data-table="{name}"' not in page[:first_fold]
    plots = re.search(r"<details id='plots'>.*?</details>", page).group(0)
    assert "data:image/png;base64," in plots
    for anchor in re.findall(r"<a href='#([a-z-]+)'>", page):
        assert f"id='{anchor}'" in page, anchor


# the other headline metrics, for the widest first screen: (per-video column, its level, what tps adds)
MORE_HEADLINE = {"lpips": (0.21, -0.012), "akd": (3.31, -0.29), "aed": (0.402, 0.004)}


@pytest.fixture(scope="module")
def widest(tables):
    """The widest first screen: three experiments, every headline metric, and each beside its largest-motion bin
    (here the same frames: only the width matters)."""
    from dataclasses import replace

    rng = np.random.default_rng(1)
    per_video = {}
    for name, shift in (("cpab", 0.0), ("tps", 1.0), ("implicit", 0.5)):
        per_video[name] = {s: run_rows(-0.01 * shift, -0.005 - 0.03 * shift, 1, rng) for s in range(SEEDS)}
        for rows in per_video[name].values():
            for row in rows:
                for column, (level, step) in MORE_HEADLINE.items():
                    row[column] = str(level + step * shift + 0.001 * level * rng.standard_normal())
    runs = {}
    for name, seeds in per_video.items():
        runs[name] = {s: pooled(rows) for s, rows in seeds.items()}
        for s, rows in seeds.items():
            for column in MORE_HEADLINE:
                recon = [float(r[column]) for r in rows if r["part"] == "reconstruction"]
                runs[name][s][f"recon/{column}"] = float(np.mean(recon))
    wide = comparison_tables(runs, per_video, "cpab")
    assert [m for m in HEADLINE_METRICS if m in wide.summary.columns] == list(HEADLINE_METRICS)
    return replace(wide, by_motion=(("large motion (0.119–0.185)", wide),))


@pytest.mark.skipif(chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_first_screen_fits_a_1400_px_window(widest, tmp_path):
    """In a 1400 px wide browser the widest headline table (every headline metric, pooled and on the largest
    motions, three experiments) fits, the page does not scroll sideways (the wide tables scroll inside their folded
    section), and a link to a folded section opens it."""
    page = write_page(widest, tmp_path)
    browser = DevTools(chromium(), tmp_path / "chromium.log")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=page.as_uri())
        browser.wait_for("document.readyState === 'complete'")
        assert browser.evaluate("document.querySelector('table.headline').getBoundingClientRect().right") < 1400
        browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = false); location.hash = 'plots'")
        assert browser.wait_for("document.getElementById('plots').open")
    finally:
        browser.close()


def test_a_second_group_of_frames_gets_its_column_under_every_metric(tables, monkeypatch):
    """The place left for per-motion-size results: a second bin of :func:`motion_bins` (here the same tables under
    another label: only the layout is tested) adds a second header row and one more cell under every metric."""
    from cpabanim.reporting import headline

    monkeypatch.setattr(headline, "motion_bins", lambda t: [headline.Bin("all frames", t), headline.Bin("later", t)])
    fragment = headline.first_screen(tables)
    head = fragment.split("<thead>")[1].split("</thead>")[0]
    assert head.count("<tr>") == 2 and head.count('colspan="2"') == 3  # 2 metrics, and the blank over the names
    assert re.findall(r"<th>(all frames|later)</th>", head) == ["all frames", "later"] * 2
    tps = next(r for r in re.findall(r"<tr[^>]*>(.*?)</tr>", fragment) if r.startswith("<td>tps</td>"))
    assert tps.count("<td") == 2 + 2 * 2
