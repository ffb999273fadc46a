"""The whole pipeline on a tiny configuration, through `snakemake --cores all` AND `dvc repro`.

Each tool runs in its own throw-away git repository (the project's pipeline files, with the installed package).
Snakemake runs two experiments side by side (cpab, tps) in one invocation, two seeds each (params.yaml:
`seeds: [0, 1]`); DVC runs one job at a time, so it runs one seed (`seeds: [0]`: its `train@0`, ...) of the
default, then of `tps` as a DVC experiment (the two-seed dvc.yaml is the Snakemake repository's, recorded there),
with reconstruct and evaluate as 2 shards each where Snakemake has 1.
The full runs start together, then each test checks one property: outputs and MLflow runs, the same files from
both tools (deterministic seeds; 1 shard or 2), an unfinished shard planned again alone, no-op re-runs, a one-key
change that re-runs exactly the stages that read it (downloads untouched), and a second experiment that shares the
data stages.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cpabanim.config.mappings import deep_merge
from cpabanim.pipeline import all_stages

from .conftest import BIN, copy_project, demo_inputs, run, tool_env

pytestmark = pytest.mark.slow

# Really tiny: a handful of 32 px frames and three training steps; every stage still runs for real.
SEEDS = [0, 1]  # Snakemake's
DVC_SEEDS = [0]  # DVC's: its stages run one after another, and the CI has 2 cores
# DVC runs reconstruct and evaluate as 2 shards each (dvc.yaml's matrix over seeds x shards), Snakemake as 1: the
# same files come out, byte for byte (docs/evaluation.md, "Sharded stages"); the 2 test videos fall in both shards
DVC_SHARDS = 2
TINY = {
    "seeds": SEEDS,
    # one shard per data stage: the jobs stay few (tests/pipeline/test_shards.py runs 8 and 1 side by side)
    "data": {"frame_size": 32, "shards": 1, "synthetic": {"num_train": 4, "num_test": 2, "num_frames": 6}},
    "masks": {"shards": 1},
    "train": {
        "max_steps": 3,
        "batch_size": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "image_every": 0,
        "avd_epochs": 1,
        "avd_repeats": 1,
        "avd_batch_size": 2,
        "num_workers": 0,
    },
    "reconstruct": {"max_frames": 4},
    "animate": {"num_pairs": 1, "modes": ["relative"]},
    # the trained models are logged and registered by the report in tests/pipeline/test_recorded_params.py; here
    # they would cost ~15 s per report run
    "tracking": {"log_checkpoints": False},
}
# the tests that check jobs and files, not tracking (SLURM): MLflow's import is most of a tiny job's start-up
TINY_UNTRACKED = {**TINY, "tracking": {**TINY["tracking"], "enabled": False}}
DVC_TINY = {
    **TINY,
    "seeds": DVC_SEEDS,
    "reconstruct": {**TINY["reconstruct"], "shards": DVC_SHARDS},
    "evaluate": {"shards": DVC_SHARDS},
}
SHARED = {"download", "preprocess", "masks"}
PER_EXPERIMENT = {"train", "avd", "reconstruct", "animate", "evaluate"}
READ_BY_TRAIN_ONLY = {"train", "avd", "reconstruct", "animate", "evaluate", "report"}


def jobs(stages: set[str]) -> set[str]:
    """The rules (and dvc.yaml stages) of ``stages``: a sharded stage is its shards' and its gather's."""
    return stages | {f"{name}_shard" for name in stages if all_stages()[name].shards}


def set_params(root: Path, values: dict) -> None:
    """Merge ``values`` into the project's params.yaml, and regenerate dvc.yaml (its shard loops come from it)."""
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, values), sort_keys=False))
    run([str(BIN / "cpabanim"), "dag", "--write"], root)


def commit(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", message], root)


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=cwd, env=tool_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen, what: str, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{out[-8000:]}"
    return out


SNAKEMAKE = [str(BIN / "snakemake"), "--cores", "all", "--config", "experiments=[cpab,tps]"]
DVC_REPRO = [str(BIN / "dvc"), "repro"]
# untracked: DVC's temporary workspace is deleted after the run with its mlflow.db (not an output of any stage), and
# its ten stages' MLflow start-ups are the longest part of the fixture's DVC chain
DVC_EXPERIMENT = f"{BIN / 'dvc'} exp run --temp -n tps -S experiment=tps -S +tracking.enabled=false"


def ran_snakemake(log: str) -> set[str]:
    return set(re.findall(r"^\s*(?:local)?rule (\w+):", log, re.M)) - {"all"}


def ran_dvc(log: str) -> set[str]:
    """The stages DVC ran, a per-seed stage (``train@1``) by its name."""
    return {name.split("@")[0] for name in re.findall(r"Running stage '([\w@-]+)'", log)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both tools' full runs of the same tiny parameters, each in its own repository, started together."""
    roots = {}
    for tool in ("snakemake", "dvc"):
        root = copy_project(tmp_path_factory.mktemp(tool) / "project")
        set_params(root, TINY if tool == "snakemake" else DVC_TINY)
        run([str(BIN / "cpabanim"), "params", "--write", "params.resolved.yaml"], root)
        commit(root, "tiny parameters")
        roots[tool] = root
    started = time.monotonic()
    # DVC's second experiment (tps) runs as soon as the first is done, in DVC's own temporary workspace: while
    # Snakemake's one-GPU-job-at-a-time tail leaves a core free; the workspace keeps the first
    experiment_log = tmp_path_factory.mktemp("dvc-experiment") / "tps.log"
    dvc_chain = f"{DVC_REPRO[0]} repro && {DVC_EXPERIMENT} > {experiment_log} 2>&1"
    procs = {"snakemake": start(SNAKEMAKE, roots["snakemake"]), "dvc": start(["sh", "-c", dvc_chain], roots["dvc"])}
    logs = {tool: finish(proc, tool) for tool, proc in procs.items()}
    logs["dvc-experiment"] = experiment_log.read_text()
    sys.stderr.write(f"full runs of both tools: {time.monotonic() - started:.0f} s\n")
    return roots, logs


def mlflow_runs(root: Path) -> list:
    """Every run of the project's MLflow experiment, read in a subprocess (MLflow keeps global state)."""
    script = (
        "import json, mlflow\n"
        "mlflow.set_tracking_uri('sqlite:///mlflow.db')\n"
        "runs = mlflow.search_runs(experiment_names=['cpabanim'], output_format='list')\n"
        "print(json.dumps([dict(name=r.info.run_name, id=r.info.run_id, status=r.info.status,\n"
        "    start=r.info.start_time, end=r.info.end_time,\n"
        "    params=r.data.params, metrics=r.data.metrics, tags=r.data.tags) for r in runs]))\n"
    )
    return json.loads(run([sys.executable, "-c", script], root).stdout)


def run_metrics(root: Path, experiment: str, seed: int) -> dict:
    return json.loads((root / "outputs" / experiment / f"seed{seed}" / "metrics.json").read_text())


def check_experiment(
    root: Path, experiment: str, orchestrator: str, runs: list, first: bool = True, seeds=SEEDS
) -> dict:
    """One experiment's outputs per seed and its MLflow parent (named after it) among ``runs`` (:func:`mlflow_runs`,
    read once by the caller: a subprocess that imports MLflow): a finished child per seed, the seed's stages below
    it; the shared stages and the report below the first experiment's parent; the parent holds each metric's mean
    over the seeds, its sd and n."""
    by_seed = {seed: run_metrics(root, experiment, seed) for seed in seeds}
    assert all({"recon/l1", "recon/psnr", "recon/ssim"} <= set(metrics) for metrics in by_seed.values())
    assert len({metrics["recon/l1"] for metrics in by_seed.values()}) == len(seeds), "one model per seed"
    for seed in seeds:
        assert (root / "models" / "checkpoints" / experiment / f"seed{seed}" / "last.pt").is_file()
    parents = [r for r in runs if r["tags"].get("cpabanim.role") == "pipeline" and r["name"] == experiment]
    assert len(parents) == 1, "one parent run per experiment per invocation"
    parent = parents[0]
    children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == parent["id"]]
    seed_runs = {int(r["tags"]["cpabanim.seed"]): r for r in children if r["tags"]["cpabanim.role"] == "seed"}
    assert sorted(seed_runs) == seeds
    stages = [r for r in children if r["tags"]["cpabanim.role"] == "stage"]
    assert {r["tags"]["cpabanim.stage"] for r in stages} == (SHARED | {"report"} if first else set())
    for seed, seed_run in seed_runs.items():
        below = [r for r in runs if r["tags"].get("mlflow.parentRunId") == seed_run["id"]]
        assert {r["tags"]["cpabanim.stage"] for r in below} == PER_EXPERIMENT
        assert all(r["tags"]["cpabanim.seed"] == str(seed) for r in below)
        assert seed_run["metrics"]["recon/l1"] == pytest.approx(by_seed[seed]["recon/l1"])
        children += below
    assert all(r["status"] == "FINISHED" for r in [parent, *children])
    values = [m["recon/l1"] for m in by_seed.values()]
    assert parent["metrics"]["recon/l1"] == pytest.approx(sum(values) / len(values))
    assert parent["metrics"]["recon/l1/n"] == len(seeds) and (len(seeds) == 1 or parent["metrics"]["recon/l1/sd"] > 0)
    tags = parent["tags"]
    assert tags["pipeline.orchestrator"] == orchestrator and tags["cpabanim.experiment"] == experiment
    assert tags["git.commit"] == run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    assert tags["device"] == "cpu" and tags["data.clips.train"] == "4" and tags["data.clips.test"] == "2"
    assert parent["params"]["train.max_steps"] == "3" and parent["params"]["data.source"] == "synthetic"
    assert "seed" not in parent["params"] and parent["params"]["seeds"] == str(seeds)
    train = next(r for r in children if r["tags"].get("cpabanim.stage") == "train")
    assert "loss/total" in train["metrics"]
    # the train run records exactly the parameters it read: its declared keys, no others
    assert "reconstruct.batch_size" not in train["params"] and train["params"]["train.batch_size"] == "2"
    return parent


def test_snakemake_runs_two_experiments_side_by_side(runs):
    roots, logs = runs
    root = roots["snakemake"]
    # cpab sets what the defaults already say: it is the default experiment, trained once, under that name
    assert "experiment cpab has exactly the parameters of default" in logs["snakemake"]
    assert not (root / "models" / "checkpoints" / "cpab").exists()
    tracked = mlflow_runs(root)
    parents = {
        name: check_experiment(root, name, "snakemake", tracked, first=name == "default") for name in ("default", "tps")
    }
    assert parents["tps"]["params"]["model.motion"] == "tps" and parents["default"]["params"]["model.motion"] == "cpab"
    stages = [r["tags"].get("cpabanim.stage") for r in tracked]
    assert all(stages.count(stage) == 1 for stage in SHARED), "data stages run once for both experiments"
    assert stages.count("train") == 2 * len(SEEDS)
    report = root / "outputs" / "report"
    table = (report / "experiments.md").read_text()
    assert "| default |" in table and "| tps |" in table and "model.motion" in table
    for name in ("metrics.png", "samples.png", "train_loss.png", "index.html", "videos.html", "tables.csv"):
        assert (report / name).stat().st_size > 1000, name
    page = (report / "index.html").read_text()
    assert "data:image/png;base64," in page and "videos.html" in page
    # over the seeds: mean ± sd, the paired difference against the reference (default) with a verdict, per video
    tidy = list(csv.DictReader((report / "tables.csv").open()))
    summary = {(r["experiment"], r["column"], r["quantity"]): r["value"] for r in tidy if r["table"] == "summary"}
    assert float(summary[("tps", "recon/l1", "n")]) == len(SEEDS) and float(summary[("tps", "recon/l1", "sd")]) > 0
    verdicts = [r["value"] for r in tidy if r["table"] == "comparison" and r["column"] == "verdict"]
    # 2 test videos and 1 pair: too few for a verdict, and it says so with the numbers behind it
    assert verdicts and all(v.startswith("no difference detectable with ") and "× 2 seeds" in v for v in verdicts)
    assert "±" in page and "no difference detectable with 2 videos × 2 seeds" in page
    per_video = {r["video"] for r in tidy if r["table"].startswith("per_video") and r.get("video")}
    assert len(per_video) >= 2, per_video  # both test videos have their rows
    videos = (report / "videos.html").read_text()
    assert "<video" in videos and "tps, seed 0" in videos and "default, seed 0" in videos


def test_every_artifact_of_the_run_opens_in_the_mlflow_ui(runs, tmp_path):
    """Every artifact of every run of the Snakemake run, ``explain/`` included, has a safe path and is served by
    ``mlflow server``; every image opens in the UI's artifact view in headless Chromium (tests/test_mlflow_ui.py)."""
    from ..test_mlflow_ui import (
        check_every_artifact_has_a_safe_path_and_is_served,
        check_the_ui_shows_every_image,
        chromium,
        served_pipeline_runs,
    )

    with served_pipeline_runs(runs[0]["snakemake"]) as served:
        check_every_artifact_has_a_safe_path_and_is_served(served)
        if chromium() is None:
            pytest.skip("no Chromium installed (Debian: apt-get install chromium): the images were not opened")
        check_the_ui_shows_every_image(served, tmp_path)


def test_the_workflow_profile_applies_and_trainings_share_the_cores(runs):
    """`snakemake --cores all` finds workflow/profiles/default by itself. On a machine without a GPU no job asks
    for one (cpabanim/pipeline/resources.py, tests/pipeline/test_resources.py): the trainings run side by side, as
    many as the cores allow, not one after another."""
    roots, logs = runs
    assert "Using workflow specific profile workflow/profiles/default" in logs["snakemake"]
    assert re.search(r"resources: .*gpu=0", logs["snakemake"]), logs["snakemake"][-3000:]
    assert most_at_once(logs["snakemake"], "train") == 2, logs["snakemake"][-3000:]  # 4 trainings, 2 cores


def most_at_once(log: str, rule: str) -> int:
    """The most jobs of ``rule`` running at once, from Snakemake's log: a job runs from its ``rule <name>:`` block
    (``jobid: N``) to ``Finished jobid: N``. (The trainings' MLflow runs cover only part of each job: 3 steps end
    before another job's imports do.)"""
    events = re.findall(
        rf"^\s*(?:local)?rule {rule}:\n(?:\s+\w+:.*\n)*?\s+jobid: (\d+)|^Finished jobid: (\d+) \(Rule: {rule}\)",
        log,
        re.M,
    )
    running, most = set(), 0
    for started, finished in events:
        running = running | {started} if started else running - {finished}
        most = max(most, len(running))
    return most


def test_a_snakemake_run_is_recorded_in_dvc_lock(runs, tmp_path):
    """One version record for both runners: after Snakemake, dvc.lock holds what ran (`cpabanim record`)."""
    roots, logs = runs
    root = roots["snakemake"]
    # the run made every stage of dvc.yaml (shards included), and each job noted it in the run's journal
    recorded = re.search(r"recorded in dvc\.lock: (.*)$", logs["snakemake"], re.M).group(1).split(", ")
    assert recorded == run([str(BIN / "dvc"), "stage", "list", "--name-only"], root).stdout.split(), recorded
    assert run([str(BIN / "dvc"), "status"], root).stdout.strip().endswith("up to date.")
    repro = run([str(BIN / "dvc"), "repro"], root).stdout
    assert not ran_dvc(repro), repro[-2000:]
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock["stages"]["train@1"]["params"]["params.resolved.yaml"]["train.max_steps"] == 3
    assert any(dep["path"] == "cpabanim/models/full.py" for dep in lock["stages"]["train@1"]["deps"])
    assert lock["stages"]["train@1"]["cmd"] == "cpabanim train --set seed=1"
    run([str(BIN / "dvc"), "remote", "add", "-d", "local", str(tmp_path / "remote")], root)
    pushed = run([str(BIN / "dvc"), "push"], root).stdout
    assert re.search(r"\d+ files? pushed", pushed), pushed
    run(["git", "checkout", "--", ".dvc/config"], root)


def test_a_video_deleted_by_hand_is_what_dvc_status_catches_and_dvc_checkout_restores(runs):
    """Snakemake decides by files and times, so a video removed from data/processed plans nothing (docs/pipeline.md
    says so); DVC hashes contents: after a Snakemake run `dvc status` names the video's shard, `dvc checkout`
    restores it."""
    root = runs[0]["snakemake"]
    video = sorted((root / "data" / "processed" / "shards").glob("*/train/*.zip"))[0]
    kept = video.read_bytes()
    video.unlink()
    try:
        assert planned(root, "experiments=[cpab,tps]") == set()
        status = run([str(BIN / "dvc"), "status", "--json"], root).stdout
        assert f"preprocess_shard@{video.parent.parent.name}" in json.loads(status), status
    finally:
        run([str(BIN / "dvc"), "checkout", f"preprocess_shard@{video.parent.parent.name}"], root)
    assert video.read_bytes() == kept
    assert run([str(BIN / "dvc"), "status"], root).stdout.strip().endswith("up to date.")


def test_dvc_runs_the_whole_pipeline(runs):
    roots, logs = runs
    root = roots["dvc"]
    tracked = mlflow_runs(root)
    parent = check_experiment(root, "default", "dvc", tracked, seeds=DVC_SEEDS)
    assert any(key.startswith("dvc.preprocess.") for key in parent["tags"]), parent["tags"]
    shown = json.loads(run([str(BIN / "dvc"), "metrics", "show", "--json"], root).stdout)
    assert "recon/l1" in json.dumps(shown)
    # what dvc.lock records for train is what the stage used (its MLflow params)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    recorded = lock["stages"]["train@0"]["params"]["params.resolved.yaml"]
    train = next(r for r in tracked if r["tags"].get("cpabanim.stage") == "train")
    assert str(recorded["train.batch_size"]) == train["params"]["train.batch_size"] == "2"
    commit(root, "tiny run")


def test_demo_animates_with_the_checkpoint_the_pipeline_trained(runs, tmp_path):
    """After the pipeline, `cpabanim demo` needs no --checkpoint: it finds the experiment's last.pt (for the
    default experiment and for a named one)."""
    from cpabanim.data.video import read_video

    roots, _ = runs
    for root, experiment in ((roots["dvc"], None), (roots["snakemake"], "tps")):
        source, video, count = demo_inputs(root / "data" / "processed", tmp_path / (experiment or "default"))
        out = tmp_path / f"{experiment or 'default'}.mp4"
        command = [
            str(BIN / "cpabanim"),
            "demo",
            "--source",
            str(source),
            "--driving",
            str(video),
            "--out",
            str(out),
            "--crop",
            "none",
            "--device",
            "cpu",
        ]
        run(command + (["--experiment", experiment] if experiment else []), root)
        assert read_video(out).shape[0] == count


METRICS_FILES = ("metrics.json", "metrics_unavailable.json", "metrics_per_video.csv")


def run_files(root: Path, experiment: str, seed: int) -> dict[str, bytes]:
    """A run's metrics files and every file of its reconstruction folder (hidden marks aside), by path."""
    folder = root / "outputs" / experiment / f"seed{seed}"
    files = [folder / name for name in METRICS_FILES] + sorted((folder / "reconstruction").rglob("*"))
    found = {str(p.relative_to(folder)): p.read_bytes() for p in files if p.is_file()}
    return {path: data for path, data in found.items() if not path.split("/")[-1].startswith(".")}


def test_same_params_same_data_same_code_same_metrics_and_shards_change_no_byte(runs):
    """Same parameters, data, seed and code on one machine and thread count: the same numbers from both tools, and
    DVC's 2 shards of reconstruct and evaluate give Snakemake's 1-shard files byte for byte."""
    roots, _ = runs
    lock = yaml.safe_load((roots["dvc"] / "dvc.lock").read_text())["stages"]
    for seed in DVC_SEEDS:
        for stage in ("reconstruct", "evaluate"):
            shards = {f"{stage}_shard@{seed}-{k:03d}" for k in range(DVC_SHARDS)}
            assert shards | {f"{stage}@{seed}"} <= set(lock), sorted(lock)
        folder = roots["dvc"] / "outputs" / "default" / f"seed{seed}" / "shards" / "evaluate"
        records = [json.loads((folder / f"{k:03d}" / "done.json").read_text()) for k in range(DVC_SHARDS)]
        assert all(record["videos"] for record in records), "the videos are spread over the shards"
        one, two = run_files(roots["snakemake"], "default", seed), run_files(roots["dvc"], "default", seed)
        assert len(one) > len(METRICS_FILES) + 2 and one == two, sorted(set(one) ^ set(two))


def test_nothing_changed_is_a_no_op(runs):
    roots, _ = runs
    out = run(SNAKEMAKE, roots["snakemake"])
    assert "Nothing to be done" in out.stdout + out.stderr
    assert run([str(BIN / "dvc"), "status"], roots["dvc"]).stdout.strip().endswith("up to date.")
    # and across the runners: what `dvc repro` made, Snakemake takes as done
    out = run([str(BIN / "snakemake"), "-n", "--cores", "1"], roots["dvc"])
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout[-3000:]


def planned(root: Path, *config: str) -> set[str]:
    """The rules a dry run of Snakemake would run."""
    out = run([str(BIN / "snakemake"), "-n", "--cores", "1", *(["--config", *config] if config else [])], root)
    return set(re.findall(r"^\s*(?:local)?rule (\w+):", out.stdout + out.stderr, re.M)) - {"all"}


def test_the_experiment_list_changes_without_rerunning_shared_stages(runs):
    root = runs[0]["snakemake"]
    # fewer or reordered experiments: nothing is trained again; the report compares a different list
    assert planned(root, "experiments=[tps]") == {"report"}
    assert planned(root, "experiments=[tps,cpab]") == {"report"}
    # a new experiment: its own stages and the report, never the data stages
    assert planned(root, "experiments=[cpab,tps,implicit]") == jobs(PER_EXPERIMENT | {"report"})
    # another seed: that seed's runs and the report; the data and the test pairs do not depend on the seed
    assert planned(root, "experiments=[cpab,tps]", "seeds=[0,1,5]") == jobs(PER_EXPERIMENT | {"report"})
    assert planned(root, "experiments=[cpab,tps]", "seeds=[1]") == {"report"}


def edited(path: Path):
    """Append a comment to a source file (a real edit of its bytes); returns the function that undoes it."""
    text = path.read_text()
    path.write_text(text + "\n# an edit\n")
    return lambda: path.write_text(text)


def dvc_status(root: Path) -> dict[str, set[str]]:
    """`dvc status`: each stage that changed (``train@1`` by its name) -> the files it names as changed."""
    status = json.loads(run([str(BIN / "dvc"), "status", "--json"], root).stdout)
    changed: dict[str, set[str]] = {}
    for name, reasons in status.items():
        for reason in reasons:
            if isinstance(reason, dict):
                for files in reason.values():
                    changed.setdefault(name.split("@")[0], set()).update(files)
    return changed


def test_a_code_edit_reruns_exactly_the_stages_that_run_that_code(runs):
    """Snakemake plans the stages that run the edited file and what follows them; DVC's status and dry run name
    the stages whose own code changed (it re-runs the rest only when their inputs do change). A module only
    training reads (the augmentations) never re-runs a data stage: the dependencies are files, not packages."""
    roots, _ = runs
    smk, dvc = roots["snakemake"], roots["dvc"]
    for relative, direct, with_followers in (
        ("cpabanim/models/dense_motion.py", {"train", "avd", "reconstruct", "animate", "report"}, READ_BY_TRAIN_ONLY),
        ("cpabanim/reporting/report.py", {"report"}, {"report"}),
        ("cpabanim/data/augmentation.py", {"train", "avd"}, READ_BY_TRAIN_ONLY),
    ):
        assert {n for n, stage in all_stages().items() if relative in stage.code} == direct
        undo = [edited(smk / relative), edited(dvc / relative)]
        try:
            assert planned(smk, "experiments=[cpab,tps]") == jobs(with_followers), relative
            assert dvc_status(dvc) == dict.fromkeys(jobs(direct), {relative}), relative
            dry = run([str(BIN / "dvc"), "repro", "--dry"], dvc).stdout
            assert ran_dvc(dry) == jobs(direct), f"{relative}: {dry[-2000:]}"
        finally:
            for undo_one in undo:
                undo_one()
    assert planned(smk, "experiments=[cpab,tps]") == set()
    assert run([str(BIN / "dvc"), "status"], dvc).stdout.strip().endswith("up to date.")


def dvc_changed(root: Path) -> set[str]:
    """The stages `dvc status` says changed, after the params stage has resolved params.yaml again."""
    run([str(BIN / "dvc"), "repro", "--single-item", "params"], root)
    status = json.loads(run([str(BIN / "dvc"), "status", "--json"], root).stdout)
    return {name.split("@")[0] for name in status} - {"params"}


def test_one_key_reruns_exactly_the_stages_that_read_it_and_downloads_survive(runs):
    """A training key in params.yaml: both tools plan exactly the stages that read it (planned, not run: the
    re-runs themselves are those of a config value, below); a forced download keeps what the user put there."""
    roots, _ = runs
    keep = roots["snakemake"] / "data" / "raw" / "mine.mp4"
    keep.write_bytes(b"a file the user put there")
    for root in roots.values():
        set_params(root, {"data": {"augmentation": {"horizontal_flip": False}}})
    try:
        assert planned(roots["snakemake"], "experiments=[cpab,tps]") == jobs(READ_BY_TRAIN_ONLY)
        # DVC's status: the stages whose own inputs changed (the avd stage's videos are augmented as training's)
        assert dvc_changed(roots["dvc"]) == {"train", "avd"}
    finally:
        for root in roots.values():
            run(["git", "checkout", "--", "params.yaml"], root)
        run([str(BIN / "dvc"), "repro", "--single-item", "params"], roots["dvc"])
    assert dvc_changed(roots["dvc"]) == set()
    # a forced re-run of the download keeps what is there too (persistent output, never deleted first)
    run(
        [
            str(BIN / "snakemake"),
            "--cores",
            "1",
            "--forcerun",
            "download",
            "--until",
            "download",
            "--config",
            "experiments=[cpab,tps]",
        ],
        roots["snakemake"],
    )
    assert keep.read_bytes() == b"a file the user put there"


def test_a_snakemake_config_value_reruns_only_the_stages_that_read_it(runs):
    """A value on the command line re-runs the stages that read it (planned for animate's key; run for the
    report's: another reference experiment changes the comparison and nothing else)."""
    roots, _ = runs
    root = roots["snakemake"]
    assert planned(root, "experiments=[cpab,tps]", "set=[animate.num_pairs=2]") == jobs(
        {"animate", "evaluate", "report"}
    )
    log = run([*SNAKEMAKE, "set=[report.reference=tps]"], root)
    assert ran_snakemake(log.stdout + log.stderr) == {"report"}, log.stdout[-3000:]
    # what ran, and only that, goes into dvc.lock (the journal of the run, cpabanim/pipeline/journal.py)
    assert re.search(r"recorded in dvc\.lock: params, report$", log.stdout + log.stderr, re.M), log.stderr[-3000:]
    assert not list((root / ".snakemake" / "cpabanim" / "ran").iterdir())
    assert planned(root, "experiments=[cpab,tps]", "set=[report.reference=tps]") == set()
    tidy = list(csv.DictReader((root / "outputs" / "report" / "tables.csv").open()))
    assert {r["experiment"] for r in tidy if r["table"] == "comparison"} == {"default"}  # now against tps


def test_dvc_experiment_shares_the_data_stages_and_keeps_the_first(runs):
    """`dvc exp run -S experiment=tps` (run by the fixture, --temp) trains and scores tps's seeds, reusing the
    processed data and masks; `dvc exp show` lists every seed's metrics; the workspace keeps the first experiment."""
    roots, logs = runs
    root = roots["dvc"]
    # DVC's temporary workspace starts without the persistent raw folder, so the download stage runs again (for the
    # synthetic source it only records the manifest: nothing is fetched); processing and masks are reused
    ran = ran_dvc(logs["dvc-experiment"])
    assert ran - {"download"} == jobs(READ_BY_TRAIN_ONLY) | {"params"}, logs["dvc-experiment"][-3000:]
    assert all((root / "outputs" / "default" / f"seed{seed}" / "metrics.json").is_file() for seed in DVC_SEEDS)
    # the experiment's baseline is the commit before "tiny run" (test_dvc_runs_the_whole_pipeline): all commits
    shown = run([str(BIN / "dvc"), "exp", "show", "--json", "--all-commits"], root).stdout
    assert '"tps"' in shown and '"seeds"' in shown
    # `dvc exp show` lists every seed's metrics of the DVC experiment
    assert all(f"outputs/tps/seed{seed}/metrics.json" in shown for seed in DVC_SEEDS)
    assert '"recon/l1"' in shown


def test_a_fresh_clone_pulls_the_dvc_run_from_a_remote_and_reruns_nothing(runs, tmp_path):
    """The DVC run, committed and pushed to a local-folder remote: a fresh clone pulls it, and neither DVC nor
    Snakemake finds anything to run (tests/pipeline/test_dvc_remote.py)."""
    from .test_dvc_remote import check_a_fresh_clone_pulls_and_reruns_nothing

    check_a_fresh_clone_pulls_and_reruns_nothing(runs[0]["dvc"], tmp_path)


def test_removing_a_checkpoint_folder_makes_training_due_again(runs):
    roots, _ = runs
    root = roots["snakemake"]
    import shutil

    shutil.rmtree(root / "models" / "checkpoints" / "tps")
    out = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--config", "experiments=[cpab,tps]"], root)
    planned = set(re.findall(r"^\s*(?:local)?rule (\w+):", out.stdout + out.stderr, re.M))
    assert {"train", "avd", "reconstruct", "animate", "evaluate", "report"} <= planned, out.stdout[-2000:]


def test_an_unfinished_evaluate_shard_is_the_one_job_planned_again_and_keeps_its_records(runs):
    """An evaluate shard without its completion record (killed before it wrote it): Snakemake plans that shard
    and the gather, nothing else; the shard keeps the records it had made and the files come out the same."""
    root = runs[0]["snakemake"]
    run_folder = f"outputs/default/seed{SEEDS[0]}"
    before = run_files(root, "default", SEEDS[0])
    shard = root / run_folder / "shards" / "evaluate" / "000"
    records = {p: p.stat().st_mtime_ns for p in shard.rglob("*.npz")}
    (shard / "done.json").unlink()
    # (`snakemake --cores all` asks for every shard's record through `rule all`, as these targets do)
    targets = [f"{run_folder}/shards/evaluate/000/done.json", f"{run_folder}/metrics.json"]
    plan = run([str(BIN / "snakemake"), "-n", "--cores", "1", *targets], root).stdout
    jobs_planned = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.split("Job stats:")[1], flags=re.M))
    assert jobs_planned == {"evaluate_shard": "1", "evaluate": "1", "total": "2"}, plan[-2000:]
    run([str(BIN / "snakemake"), "--cores", "1", *targets], root)
    # one record per test video and per animation pair, none made again
    assert {p: p.stat().st_mtime_ns for p in shard.rglob("*.npz")} == records
    assert len(records) == TINY["data"]["synthetic"]["num_test"] + TINY["animate"]["num_pairs"]
    assert run_files(root, "default", SEEDS[0]) == before
