"""Stage ``cpabanim train``: train the animation model with the paper's schedule (paper.md §3).

    cpabanim train [--preset vox-256] [--set train.max_steps=200] [--restart]
    torchrun --nproc_per_node=2 -m cpabanim train ...        # multi-GPU (or multi-process CPU with gloo)

Adam(betas 0.5/0.999, wd 1e-4) over keypoint detector + dense motion + inpainting, a second one for the
background predictor (stepped from ``bg_start``), MultiStepLR per epoch, inf-norm gradient clipping (10) on the
keypoint detector, dense motion and background networks, transform-dropout schedule. An epoch is the dataset
repeated ``num_repeats`` times; ``max_steps`` caps the run for quick experiments.

Resumable: ``{paths.checkpoints}/last.pt`` is written atomically every ``checkpoint_every`` steps and at the end.
Re-running continues from it (unless it is marked complete, or ``--restart``). Batches are drawn from a
permutation seeded by (seed, epoch) and every step re-seeds the generators it uses from (seed, step), so a
resumed run gives the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cpabanim.config import add_params_arguments, deep_merge, params_from_args
from cpabanim.errors import ConfigError, CpabanimError, DataError

log = logging.getLogger(__name__)

DEFAULT_TRAIN_PARAMS: dict[str, Any] = {
    "num_epochs": 100, "epoch_milestones": [70, 90], "lr_generator": 1.0e-4,
    "batch_size": 8, "betas": [0.5, 0.999], "weight_decay": 1.0e-4, "clip_grad_norm": 10.0,
    "bg_start": 0, "dropout_epoch": 35, "dropout_maxp": 0.3, "dropout_startp": 0.1, "dropout_inc_epoch": 10,
    "max_steps": 0, "checkpoint_every": 100, "log_every": 10, "image_every": 100, "amp": "auto",
    "avd_steps": 0, "avd_lr": 1.0e-3, "avd_random_scale": 0.25, "avd_batch_size": 8,
}


def dropout_probability(epoch: int, p: dict[str, Any]) -> float:
    """Transform-dropout rate of TPSMM/CPABMM: ramps from startp to maxp, off after ``dropout_epoch``."""
    if epoch >= p["dropout_epoch"]:
        return 0.0
    ramp = epoch / max(p["dropout_inc_epoch"], 1) * p["dropout_maxp"] + p["dropout_startp"]
    return float(min(ramp, p["dropout_maxp"]))


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919 + 17) % (2**63 - 1)


def epoch_order(num_items: int, seed: int, epoch: int, rank: int, world: int, batch_size: int) -> list[list[int]]:
    """The batches of one epoch for this rank: a permutation seeded by (seed, epoch), split across ranks like
    DistributedSampler (rank r takes items r, r+world, ...), cut into full batches (drop_last)."""
    generator = torch.Generator().manual_seed(step_seed(seed, 1_000_000 + epoch))
    order = torch.randperm(num_items, generator=generator).tolist()
    per_rank = order[rank::world][: (num_items // world)]
    count = len(per_rank) // batch_size
    return [per_rank[i * batch_size:(i + 1) * batch_size] for i in range(count)]


class TrainingStep(nn.Module):
    """Model + objective in one module, so that DDP sees the whole step (losses call sub-networks again)."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict[str, Any], use_bg: bool, dropout_p: float, generator: torch.Generator):
        generated = self.model(batch["source"], batch["driving"], use_bg=use_bg, dropout_p=dropout_p,
                               generator=generator)
        losses = self.objective(self.model, batch, generated, use_bg, generator=generator)
        return losses, generated


def _check(params: dict[str, Any]) -> None:
    t = params
    if t["batch_size"] < 1:
        raise ConfigError("train.batch_size must be >= 1")
    if t["amp"] not in ("auto", "off", "bf16", "fp16"):
        raise ConfigError(f"train.amp must be auto, off, bf16 or fp16, got {t['amp']!r}")


def _autocast(device: torch.device, amp: str):
    import contextlib

    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext(), None
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


def _collate(items: list[dict[str, Any]], device: torch.device) -> dict[str, Any]:
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values).to(device)
        elif isinstance(values[0], np.ndarray):
            batch[key] = torch.from_numpy(np.stack(values)).to(device)
        else:
            batch[key] = values
    return batch


def image_grid(batch: dict[str, Any], generated: dict[str, Any], max_rows: int = 4) -> np.ndarray:
    """(H*rows, W*5, 3) uint8: source+kp / driving+kp / prediction / deformed / occlusion, one row per sample."""
    rows = []
    n = min(max_rows, batch["source"].shape[0])
    for i in range(n):
        cells = []
        for image, kp in ((batch["source"][i], generated["kp_source"][i]), (batch["driving"][i], generated["kp_driving"][i])):
            cells.append(_draw_keypoints(image, kp))
        cells.append(_to_uint8(generated["prediction"][i]))
        cells.append(_to_uint8(generated["deformed"][i]))
        occ = generated["occlusion_map"][-1][i]
        cells.append(_to_uint8(occ.expand(3, -1, -1)))
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def _draw_keypoints(image: torch.Tensor, kp: torch.Tensor) -> np.ndarray:
    out = _to_uint8(image).copy()
    h, w = out.shape[:2]
    pts = ((kp.detach().float().cpu().numpy() + 1) / 2 * [w - 1, h - 1]).round().astype(int)
    import colorsys

    for j, (x, y) in enumerate(pts):
        r, g, b = colorsys.hsv_to_rgb(j / max(len(pts), 1), 1.0, 1.0)
        out[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def build_dataset(params: dict[str, Any], needs_masks: bool):
    """The configured FramesDataset over ``{paths.processed}`` (with ``{paths.masks}`` when the semantic loss is
    on); an epoch is the train set repeated ``data.num_repeats`` times (the paper's num_repeats)."""
    from cpabanim.data.dataset import dataset_from_params

    root = Path(params["paths"]["processed"])
    if not (root / "train").is_dir():
        raise DataError(f"no training frames in {root / 'train'}: run `cpabanim preprocess` first")
    if needs_masks and not Path(params["paths"]["masks"]).is_dir():
        raise DataError(f"loss.semantic=masks needs region masks in {params['paths']['masks']}: run `cpabanim masks` "
                        "first (or --set loss.semantic=off)")
    return dataset_from_params(params, "train", with_masks=needs_masks)


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _restore_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(state["python"])


def _device(params: dict[str, Any], local_rank: int) -> torch.device:
    choice = params.get("device", "auto")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for but no CUDA device is available")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


# Parameters that only say how long to train or how often to log/save: changing them continues a run
# (a larger max_steps extends a complete one) instead of starting it again.
_SCHEDULE_KEYS = {"max_steps", "num_epochs", "checkpoint_every", "log_every", "image_every",
                  "avd_steps", "avd_lr", "avd_random_scale", "avd_batch_size"}
# Sections whose values define what is learned (paths, tracking and the later stages do not).
_TRAINING_SECTIONS = ("seed", "data", "model", "loss", "train")


def changed_training_params(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted names of the parameters that define training and differ between a checkpoint and now."""
    from cpabanim.config import flatten

    def relevant(params: dict[str, Any]) -> dict[str, Any]:
        flat = flatten({k: params.get(k) for k in _TRAINING_SECTIONS})
        return {k: v for k, v in flat.items() if not (k.startswith("train.") and k.split(".", 1)[1] in _SCHEDULE_KEYS)}

    old, new = relevant(saved), relevant(current)
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(params: dict[str, Any], dataset=None, restart: bool = False, track: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns {"step", "epoch", "losses": last step's losses, "checkpoint"}.

    ``dataset`` overrides the FramesDataset (tests); ``stop_after`` ends this call after that many steps without
    marking the checkpoint complete (simulates an interruption).
    """
    from cpabanim.losses.objective import GeneratorObjective
    from cpabanim.models.checkpoint import read_checkpoint, save_checkpoint
    from cpabanim.models.full import AnimationModel

    tp = deep_merge(DEFAULT_TRAIN_PARAMS, params.get("train", {}) or {})
    _check(tp)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(params, local_rank)
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    seed = int(params.get("seed", 0))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)

    try:
        model = AnimationModel(params.get("model", {})).to(device)
    except ValueError as exc:  # inconsistent sizes (e.g. scale_factor vs hourglass depth)
        raise ConfigError(f"model: {exc}") from exc
    objective = GeneratorObjective(params.get("loss", {}), params["paths"].get("weights")).to(device)
    if dataset is None:
        dataset = build_dataset(params, objective.needs_masks)
    if len(dataset) < tp["batch_size"] * world:
        raise DataError(f"the training set has {len(dataset)} items, fewer than batch_size x processes "
                        f"({tp['batch_size']} x {world})")
    betas = tuple(tp["betas"])
    main_params = (list(model.kp_detector.parameters()) + list(model.dense_motion.parameters())
                   + list(model.generator.parameters()))
    optimizers = {"generator": torch.optim.Adam(main_params, lr=tp["lr_generator"], betas=betas,
                                                weight_decay=tp["weight_decay"])}
    if model.bg_predictor is not None:
        optimizers["bg"] = torch.optim.Adam(model.bg_predictor.parameters(), lr=tp["lr_generator"], betas=betas,
                                            weight_decay=tp["weight_decay"])
    schedulers = {k: torch.optim.lr_scheduler.MultiStepLR(o, tp["epoch_milestones"], gamma=0.1)
                  for k, o in optimizers.items()}

    checkpoint_path = Path(params["paths"]["checkpoints"]) / "last.pt"
    step, epoch, resumed_complete = 0, 0, False
    if checkpoint_path.is_file() and not restart:
        state = read_checkpoint(checkpoint_path, map_location=device)
        changed = changed_training_params(state.get("params") or {}, params)
        if changed:
            # The orchestrators re-run train because a parameter it depends on changed: resuming would silently
            # keep the old model. Start again, and keep the old checkpoint rather than lose it.
            superseded = checkpoint_path.with_name("last.superseded.pt")
            if is_main_process():
                shutil.copy2(checkpoint_path, superseded)
            log.warning("parameters changed since %s was written (%s): training from scratch; the previous "
                        "checkpoint is kept as %s", checkpoint_path, ", ".join(changed[:8]), superseded)
        else:
            model.load_state_dict(state["model"])
            for k, o in optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            for k, s in schedulers.items():
                s.load_state_dict(state["schedulers"][k])
            step, epoch = state["step"], state["epoch"]
            resumed_complete = bool(state.get("complete"))
            _restore_rng(state.get("rng_state", {}))

    step_module: nn.Module = TrainingStep(model, objective)
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        step_module = DistributedDataParallel(step_module, device_ids=[local_rank] if device.type == "cuda" else None,
                                              find_unused_parameters=True)
    autocast, scaler = _autocast(device, "bf16" if tp["amp"] == "auto" else tp["amp"])
    batches_per_epoch = len(dataset) // world // tp["batch_size"]
    total_steps = batches_per_epoch * tp["num_epochs"]
    if tp["max_steps"]:
        total_steps = min(total_steps, tp["max_steps"])
    if resumed_complete and (step >= total_steps or epoch >= tp["num_epochs"]):
        log.info("%s is complete (step %d); nothing to do (use --restart to train again)", checkpoint_path, step)
        return {"step": step, "epoch": epoch, "losses": {}, "checkpoint": checkpoint_path}
    if step:
        log.info("resuming from %s at step %d (epoch %d) of %d", checkpoint_path, step, epoch, total_steps)
    clipped = [model.kp_detector, model.dense_motion] + ([model.bg_predictor] if model.bg_predictor else [])
    is_main = rank == 0
    tracker = None
    if track and is_main:
        from cpabanim import tracking

        tracker = tracking.stage_run("train", params)
        tracker.__enter__()
    from tqdm import tqdm

    progress = tqdm(total=total_steps, initial=step, desc="train", disable=not is_main, unit="step")
    losses_out: dict[str, float] = {}
    steps_this_call = 0
    model.train()
    try:
        while step < total_steps and epoch < tp["num_epochs"]:
            batches = epoch_order(len(dataset), seed, epoch, rank, world, tp["batch_size"])
            use_bg = epoch >= tp["bg_start"]
            dropout_p = dropout_probability(epoch, tp)
            for batch_index in range(step - epoch * batches_per_epoch, len(batches)):
                if step >= total_steps or (stop_after is not None and steps_this_call >= stop_after):
                    break
                # Re-seed everything this step draws from (data sampling, augmentation, dropout, equivariance):
                torch.manual_seed(step_seed(seed, step) + rank)
                generator = torch.Generator().manual_seed(  # CPU: draws are tiny
                    step_seed(seed, step) + rank)
                batch = _collate([dataset[i] for i in batches[batch_index]], device)
                with autocast:
                    losses, generated = step_module(batch, use_bg, dropout_p, generator)
                    total = sum(losses.values())
                for o in optimizers.values():
                    o.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(total).backward()
                    for o in optimizers.values():
                        scaler.unscale_(o)
                else:
                    total.backward()
                for net in clipped:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=tp["clip_grad_norm"], norm_type=float("inf"))
                active = [optimizers["generator"]] + ([optimizers["bg"]] if "bg" in optimizers and use_bg else [])
                for o in active:
                    if scaler is not None:
                        scaler.step(o)
                    else:
                        o.step()
                if scaler is not None:
                    scaler.update()
                step += 1
                steps_this_call += 1
                losses_out = {k: float(v.detach()) for k, v in losses.items()}
                losses_out["total"] = float(total.detach())
                if not np.isfinite(losses_out["total"]):
                    raise CpabanimError(f"training diverged at step {step}: loss {losses_out}")
                progress.update(1)
                progress.set_postfix(loss=f"{losses_out['total']:.4f}")
                if is_main and tracker is not None:
                    from cpabanim import tracking

                    if step % tp["log_every"] == 0 or step == total_steps:
                        metrics = {f"loss/{k}": v for k, v in losses_out.items()}
                        metrics["lr"] = optimizers["generator"].param_groups[0]["lr"]
                        metrics["dropout_p"] = dropout_p
                        tracking.log_metrics(metrics, step=step)
                    if tp["image_every"] and step % tp["image_every"] == 0:
                        tracking.log_image(image_grid(batch, generated), f"grids/step_{step:06d}.png")
                if is_main and tp["checkpoint_every"] and step % tp["checkpoint_every"] == 0:
                    save_checkpoint(checkpoint_path, model, optimizers, schedulers, step, epoch, params,
                                    _rng_state(), complete=False)
            else:
                # The epoch ran to its end: advance the per-epoch schedule.
                for s in schedulers.values():
                    s.step()
                epoch += 1
                continue
            break
        complete = step >= total_steps or epoch >= tp["num_epochs"]
        if stop_after is not None and steps_this_call >= stop_after and not complete:
            complete = False
        if is_main:
            save_checkpoint(checkpoint_path, model, optimizers, schedulers, step, epoch, params, _rng_state(),
                            complete=complete)
            if tracker is not None and complete:
                from cpabanim import tracking

                tracking.log_artifact(checkpoint_path, "checkpoints")
    finally:
        progress.close()
        if tracker is not None:
            tracker.__exit__(None, None, None)
        if distributed:
            import torch.distributed as dist

            dist.barrier()
    return {"step": step, "epoch": epoch, "losses": losses_out, "checkpoint": checkpoint_path}


def random_scale(kp: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Scale (B, K, 2) keypoints per sample and per axis by U[1 - scale, 1 + scale] (AVD pose augmentation)."""
    factors = torch.rand(kp.shape[0], 1, 2, generator=generator) * (2 * scale) + (1 - scale)
    return kp * factors.to(kp)


def train_avd(params: dict[str, Any], dataset=None, track: bool = True) -> dict[str, Any]:
    """Second stage (paper.md §1.7): train only the AVD network on the frozen keypoint detector, for
    ``train.avd_steps`` steps of Adam(avd_lr, betas 0.5/0.999); loss mean|kp_D - AVD(kp_S, scaled kp_D)|.
    Needs a complete ``last.pt``; writes it back with ``avd_step``. Skipped when already done."""
    from cpabanim.models.checkpoint import read_checkpoint, save_checkpoint
    from cpabanim.models.full import AnimationModel

    tp = deep_merge(DEFAULT_TRAIN_PARAMS, params.get("train", {}) or {})
    path = Path(params["paths"]["checkpoints"]) / "last.pt"
    state = read_checkpoint(path)
    if not state.get("complete"):
        raise CpabanimError(f"{path} is not complete: finish `cpabanim train` before training the AVD network")
    if state.get("avd_step", 0) >= tp["avd_steps"]:
        log.info("AVD network already trained (%d steps)", state.get("avd_step", 0))
        return {"avd_step": state.get("avd_step", 0), "loss": None}
    device = _device(params, 0)
    model = AnimationModel(state["model_params"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    model.avd.train()
    if dataset is None:
        dataset = build_dataset(params, needs_masks=False)
    optimizer = torch.optim.Adam(model.avd.parameters(), lr=tp["avd_lr"], betas=tuple(tp["betas"]))
    seed = int(params.get("seed", 0))
    batch_size = min(tp["avd_batch_size"], len(dataset))
    loss = torch.zeros(())
    for step in range(tp["avd_steps"]):
        generator = torch.Generator().manual_seed(step_seed(seed, 5_000_000 + step))
        torch.manual_seed(step_seed(seed, 5_000_000 + step))
        indices = torch.randperm(len(dataset), generator=generator)[:batch_size].tolist()
        batch = _collate([dataset[i] for i in indices], device)
        with torch.no_grad():
            kp_source = model.kp_detector(batch["source"])
            kp_driving = model.kp_detector(batch["driving"])
        reconstruction = model.avd(kp_source, random_scale(kp_driving, tp["avd_random_scale"], generator))
        loss = (kp_driving - reconstruction).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.avd.eval()
    save_checkpoint(path, model, state["optimizers"], state["schedulers"], state["step"], state["epoch"],
                    state["params"], state["rng_state"], complete=True, extra={"avd_step": tp["avd_steps"]})
    if track:
        from cpabanim import tracking

        with tracking.stage_run("train_avd", params):
            tracking.log_metrics({"loss/avd": float(loss.detach())}, step=tp["avd_steps"])
    return {"avd_step": tp["avd_steps"], "loss": float(loss.detach())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_arguments(parser)
    parser.add_argument("--resume", action="store_true", default=True,
                        help="continue from {paths.checkpoints}/last.pt when it exists and is not complete (default)")
    parser.add_argument("--restart", action="store_true", help="ignore last.pt and train from scratch")


def run(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    result = train(params, restart=args.restart)
    log.info("training stopped at step %d (epoch %d); checkpoint %s", result["step"], result["epoch"],
             result["checkpoint"])
    if params["train"].get("avd_steps", 0) > 0 and int(os.environ.get("RANK", "0")) == 0:
        from cpabanim.models.checkpoint import read_checkpoint

        if read_checkpoint(result["checkpoint"]).get("complete"):
            train_avd(params)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0
