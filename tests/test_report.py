"""The comparison report: the table with its baseline row, the figures, and the trained model logged to MLflow."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cpabanim.config.typed import ModelConfig
from cpabanim.evaluation.baselines import baseline_key
from cpabanim.reporting import figures, parents, tables
from cpabanim.reporting.recorded import Recorded

from .conftest import PROJECT_ROOT

METRICS = {
    "cpab": {
        "recon/l1": 0.1148,
        "recon/psnr": 16.38,
        "recon/frames": 96.0,
        "anim/relative/l1_first": 0.0555,
        "baseline/copy_source/recon/l1": 0.1064,
        "baseline/copy_source/recon/psnr": 18.78,
        "baseline/source_unchanged/anim/l1_first": 0.0,
    },
    "tps": {
        "recon/l1": 0.1096,
        "recon/psnr": 16.44,
        "recon/frames": 96.0,
        "anim/relative/l1_first": 0.0448,
        "baseline/copy_source/recon/l1": 0.1064,
        "baseline/copy_source/recon/psnr": 18.78,
        "baseline/source_unchanged/anim/l1_first": 0.0,
    },
}
SOURCES = {"train": "last.pt", "evaluate": "MLflow"}
RECORDS = {
    "cpab": Recorded({"model.motion": "cpab", "seed": "0"}, SOURCES),
    "tps": Recorded({"model.motion": "tps", "seed": "0"}, SOURCES),
}


def test_baseline_keys():
    assert baseline_key("recon/l1") == "baseline/copy_source/recon/l1"
    assert baseline_key("anim/avd/akd_driving") == "baseline/source_unchanged/anim/akd_driving"
    assert baseline_key("recon/frames") is None and baseline_key("baseline/copy_source/recon/l1") is None


def test_table_has_one_row_per_experiment_the_differing_parameter_and_one_baseline_row(tmp_path):
    text = tables.write_tables(["cpab", "tps"], RECORDS, METRICS, tmp_path / "t.md", tmp_path / "t.csv")
    with open(tmp_path / "t.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["experiment"] for r in rows] == ["cpab", "tps", tables.BASELINE_ROW]
    assert [r["model.motion"] for r in rows] == ["cpab", "tps", ""]  # the recorded value, also the default's
    assert "seed" not in rows[0]  # recorded alike by both: not a difference
    assert rows[0][tables.SOURCE_COLUMN] == "train: last.pt; evaluate: MLflow"
    assert not any(c.startswith("baseline/") for c in rows[0])  # baselines are a row, not columns
    assert rows[2]["recon/l1"] == "0.1064" and rows[2]["anim/relative/l1_first"] == "0"
    assert rows[2]["recon/frames"] == ""
    columns = ["experiment", "model.motion", tables.SOURCE_COLUMN, "recon/l1", "recon/psnr"]
    assert list(rows[0])[:5] == columns  # reconstruction first
    assert "recon/l1 \u2193" in text and "recon/psnr \u2191" in text and "| cpab |" in text
    assert "no motion" in (tmp_path / "t.md").read_text()


def test_experiments_scored_on_different_frames_get_a_baseline_row_each(tmp_path):
    metrics = json.loads(json.dumps(METRICS))
    metrics["tps"]["baseline/copy_source/recon/l1"] = 0.2
    rows = tables.baseline_rows(["cpab", "tps"], metrics, tables.metric_columns(metrics))
    assert [label for label, _ in rows] == [f"{tables.BASELINE_ROW}, cpab", f"{tables.BASELINE_ROW}, tps"]


def test_metrics_png_has_one_panel_per_model_metric(tmp_path, monkeypatch):
    import matplotlib.figure

    titles: list[str] = []
    save = matplotlib.figure.Figure.savefig

    def record(fig, path, *args, **kwargs):
        titles.extend(ax.get_title() for ax in fig.axes if ax.get_title())
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    figures.plot_metrics(METRICS, tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").size[0] > 500
    assert [t.split()[0] for t in titles] == ["recon/l1", "recon/psnr", "anim/relative/l1_first"]
    assert "lower is better" in titles[0] and "higher is better" in titles[1]


def _video(folder: Path, frames: int = 4, size: int = 32, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for t in range(frames):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{t:05d}.png")


def test_samples_grid_has_reconstruction_and_animation_rows(tmp_path):
    processed = tmp_path / "processed"
    for number, name in enumerate(("a#test000", "b#test001")):
        _video(processed / "test" / name, seed=number)
    experiments = {}
    for name in ("cpab", "tps"):
        out = tmp_path / name
        _video(out / "reconstruction" / "a#test000")
        pair = "000_a#test000_to_b#test001"
        _video(out / "animation" / pair / "relative")
        _video(out / "animation" / pair, frames=1)
        (out / "animation" / pair / "00000.png").rename(out / "animation" / pair / "source.png")
        (out / "animation" / "pairs.json").write_text(
            json.dumps(
                {
                    "modes": ["relative"],
                    "pairs": [
                        {"name": pair, "source": "a#test000", "source_frame": 0, "driving": "b#test001", "frames": 4}
                    ],
                }
            )
        )
        experiments[name] = {
            "processed": processed,
            "reconstruction": out / "reconstruction",
            "animation": out / "animation",
        }
    assert len(figures.reconstruction_rows(experiments)) == figures.SAMPLE_FRAMES
    mode, rows = figures.animation_rows(experiments)
    assert mode == "relative" and len(rows) == figures.SAMPLE_FRAMES and all(len(r[1]) == 4 for r in rows)
    assert all(image is not None for _, images in rows for image in images)
    figures.write_samples(experiments, tmp_path / "samples.png")
    width, height = Image.open(tmp_path / "samples.png").size
    assert height > width  # 6 rows of 4 columns


@pytest.mark.parametrize("motion", ["tps", "cpab"])
def test_trained_model_is_logged_once_and_reproduces_the_checkpoint(tmp_path, monkeypatch, motion):
    """tps exports with torch.export (MLflow's pt2); cpab's fit does not trace and falls back to pickle."""
    import mlflow

    from cpabanim.config.layers import load_params
    from cpabanim.models.checkpoint import load_checkpoint, save_checkpoint
    from cpabanim.models.full import AnimationModel
    from cpabanim.reporting.mlflow_model import ReconstructionModule
    from cpabanim.tracking import provenance, runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(provenance.PIPELINE_RUN_ENV, raising=False)
    params = load_params(
        PROJECT_ROOT / "params.yaml",
        overrides=[
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"paths.processed={tmp_path / 'processed'}",
            f"model.motion={motion}",
        ],
    )
    _video(tmp_path / "processed" / "test" / "v#0", frames=1, size=int(params["data"]["frame_size"]))
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(checkpoint, AnimationModel(ModelConfig.from_mapping(params["model"])), params=params, step=7)
    paths = {"avd_checkpoints": checkpoint.parent, "processed": tmp_path / "processed"}  # the model the report logs
    parent = runs.experiment_parent(params, motion)

    info = parents.log_trained_model(paths, parent, motion, {"recon/l1": 0.5})
    assert info is not None and parents.log_trained_model(paths, parent, motion) is None  # once per checkpoint
    uri = info.model_uri
    client = runs.mlflow_client()
    models = client.search_logged_models([client.get_run(parent).info.experiment_id])
    assert [m.status.name for m in models] == ["READY"]  # no FAILED leftover from a pt2 attempt
    model = models[0]
    assert model.name == f"cpabanim-{motion}"
    versions = client.search_model_versions(f"name = 'cpabanim-{motion}'")
    assert [v.source for v in versions] == [uri] and "recon/l1 = 0.5" in versions[0].description
    assert model.tags["serialization"] == ("pt2" if motion == "tps" else "pickle")
    assert model.params["model.motion"] == motion and model.params["checkpoint.step"] == "7"
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs.inputs[0].shape == (-1, 6, 64, 64)

    loaded = mlflow.pytorch.load_model(uri)
    original, _ = load_checkpoint(checkpoint)
    frames = torch.rand(3, 6, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = original.reconstruct(frames[:, :3], frames[:, 3:])["prediction"]
        assert torch.allclose(loaded(frames), expected, atol=1e-5)
        assert torch.equal(ReconstructionModule(original)(frames), expected)


def test_media_left_out_of_mlflow_are_named_in_a_note(tmp_path):
    root = tmp_path / "animation"
    for pair in range(parents.MAX_MEDIA_FOLDERS + 2):
        for mode in ("relative", "standard"):
            (root / f"{pair:03d}_a_to_b" / mode).mkdir(parents=True)
            (root / f"{pair:03d}_a_to_b" / mode / "video.gif").write_bytes(b"GIF89a")
    logged, left_out = parents.select_media(root)
    assert len(logged) == 2 * parents.MAX_MEDIA_FOLDERS and len(left_out) == 4  # whole pairs, every mode
    note = parents.left_out_note("animation", root, logged, left_out)
    assert note.startswith(f"4 of {len(logged) + 4} GIF/MP4 files of animation/ were not logged")
    assert all(str(p.relative_to(root)) in note for p in left_out)
