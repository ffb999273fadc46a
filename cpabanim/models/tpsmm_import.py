"""Import TPSMM checkpoints (the published vox / taichi / ted / mgif models; CPABMM's code saves the same layout)
and warm-start any model from them (docs/faithfulness.md, "Checkpoints").

A TPSMM checkpoint is a ``torch.save`` dict with one state dict per network -- ``kp_detector``,
``dense_motion_network``, ``inpainting_network``, ``bg_predictor`` (when the background motion is on),
``avd_network`` (after TPSMM's AVD stage) -- plus optimiser states and ``epoch``. Our networks are TPSMM's layer
for layer; only some module names differ:

=====================  ==================================  ==============================
TPSMM network          TPSMM name                          ours (``AnimationModel``)
=====================  ==================================  ==============================
kp_detector            ``fg_encoder.*``                    ``kp_detector.backbone.*``
bg_predictor           ``bg_encoder.*``                    ``bg_predictor.backbone.*``
dense_motion_network   ``hourglass.encoder.down_blocks.*`` ``dense_motion.hourglass.down.*``
dense_motion_network   ``hourglass.decoder.up_blocks.*``   ``dense_motion.hourglass.up.*``
dense_motion_network   ``down.weight`` (anti-alias kernel) dropped (ours is computed, not stored)
inpainting_network     ``resblock.*``                      ``generator.resblocks.*``
avd_network            (same names)                        ``avd.*``
=====================  ==================================  ==============================

``convert_tpsmm_checkpoint`` writes a cpabanim checkpoint (``motion: tps``) that every stage loads;
``warm_start`` loads a TPSMM or cpabanim checkpoint into a model of another configuration (e.g. CPAB motion,
which has one more transform), slicing the dense-motion tensors whose size depends on the number of transforms.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cpabanim.errors import CpabanimError

log = logging.getLogger(__name__)

# TPSMM network -> our sub-module, and the renames inside it (TPSMM prefix -> ours), first match wins.
NETWORKS: dict[str, str] = {
    "kp_detector": "kp_detector",
    "bg_predictor": "bg_predictor",
    "dense_motion_network": "dense_motion",
    "inpainting_network": "generator",
    "avd_network": "avd",
}
RENAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "kp_detector": (("fg_encoder.", "backbone."),),
    "bg_predictor": (("bg_encoder.", "backbone."),),
    "dense_motion_network": (
        ("hourglass.encoder.down_blocks.", "hourglass.down."),
        ("hourglass.decoder.up_blocks.", "hourglass.up."),
    ),
    "inpainting_network": (("resblock.", "resblocks."),),
    "avd_network": (),
}
# TPSMM stores its anti-aliasing Gaussian as a buffer; ours is rebuilt from the scale factor (not in the state).
DROPPED = {"dense_motion_network": ("down.weight",)}
# Only these tensors may be loaded on a matching slice: their size depends on the number of transforms, with
# TPSMM's background + K TPS channels first and CPAB's extra global transform last (docs/faithfulness.md).
SLICEABLE_PREFIX = "dense_motion."
# The motion model learns nothing and saves nothing: its CPAB bases are rebuilt from its own tessellation.
# Checkpoints written before that carry them under this prefix; a warm start ignores them (not "unused").
DERIVED_PREFIX = "motion."

FIX = "use a checkpoint saved by TPSMM's (or CPABMM's) train.py"


def is_tpsmm_checkpoint(state: Mapping[str, Any]) -> bool:
    """A dict holding TPSMM's per-network state dicts (at least the keypoint detector and dense motion)."""
    return isinstance(state.get("kp_detector"), Mapping) and isinstance(state.get("dense_motion_network"), Mapping)


def _strip_module(key: str) -> str:
    """Drop the ``module.`` prefix a (Distributed)DataParallel wrapper adds."""
    return key[len("module.") :] if key.startswith("module.") else key


def tpsmm_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """TPSMM checkpoint dict -> one state dict with our names (``kp_detector.backbone.conv1.weight``, ...)."""
    if not is_tpsmm_checkpoint(checkpoint):
        raise CpabanimError(
            f"not a TPSMM checkpoint: no kp_detector / dense_motion_network state dicts "
            f"(top-level keys: {sorted(checkpoint)[:8]}); {FIX}"
        )
    out: dict[str, torch.Tensor] = {}
    for network, ours in NETWORKS.items():
        for key, value in (checkpoint.get(network) or {}).items():
            key = _strip_module(key)
            if key in DROPPED.get(network, ()):
                continue
            for old, new in RENAMES[network]:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            out[f"{ours}.{key}"] = value
    return out


def infer_model_params(checkpoint: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """Model params of a TPSMM checkpoint: ``base`` (a preset's ``model`` section) with every size that the
    tensors determine replaced by the checkpoint's (so any preset, or none, gives the right architecture)."""
    kp, dense, gen = checkpoint["kp_detector"], checkpoint["dense_motion_network"], checkpoint["inpainting_network"]
    kp, dense, gen = ({_strip_module(k): v for k, v in net.items()} for net in (kp, dense, gen))
    num_kp_coords = kp["fg_encoder.fc.weight"].shape[0]  # num_tps * 5 * 2
    gen_down = sorted({int(k.split(".")[1]) for k in gen if k.startswith("down_blocks.")})
    dense_down = sorted({int(k.split(".")[3]) for k in dense if k.startswith("hourglass.encoder.down_blocks.")})
    dense_up = sorted({int(k.split(".")[1]) for k in dense if k.startswith("up.")})
    dense_out = [dense[f"hourglass.encoder.down_blocks.{i}.conv.weight"].shape[0] for i in dense_down]
    params = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    params.update(
        {
            "motion": "tps",
            "backbone": "resnet18",
            "num_cpab": num_kp_coords // 10,
            "num_channels": gen["first.conv.weight"].shape[1],
            "bg": "bg_predictor" in checkpoint,
        }
    )
    params["generator"] = {
        "block_expansion": gen["first.conv.weight"].shape[0],
        "max_features": max(gen[f"down_blocks.{i}.conv.weight"].shape[0] for i in gen_down),
        "num_down_blocks": len(gen_down),
    }
    params["dense_motion"] = {
        "block_expansion": dense_out[0] // 2,
        "max_features": max(dense_out),
        "num_blocks": len(dense_down),
        "scale_factor": 2.0 ** -len(dense_up) if dense_up else 1.0,
    }
    avd = checkpoint.get("avd_network")
    if isinstance(avd, Mapping):
        avd = {_strip_module(k): v for k, v in avd.items()}
        params["avd"] = {
            "id_bottle_size": avd["id_encoder.9.weight"].shape[0],
            "pose_bottle_size": avd["pose_encoder.9.weight"].shape[0],
        }
    return params


def read_tpsmm_checkpoint(src: Path) -> dict[str, Any]:
    """Load a TPSMM ``.pth.tar`` with ``weights_only=True`` (it holds only tensors, numbers and dicts)."""
    from cpabanim.weights import safe_torch_load

    state = safe_torch_load(src, "TPSMM checkpoint", FIX)
    if not isinstance(state, dict) or not is_tpsmm_checkpoint(state):
        raise CpabanimError(f"{src} is not a TPSMM checkpoint (no kp_detector / dense_motion_network); {FIX}")
    return state


def convert_tpsmm_checkpoint(src: Path, dst: Path, preset_model_params: dict) -> dict:
    """Write TPSMM checkpoint ``src`` as a cpabanim checkpoint ``dst`` (``motion: tps``).

    ``preset_model_params``: a complete ``model`` section (e.g. the vox-256 preset's); the sizes the tensors
    determine override it. Returns model_params, overridden (preset values the checkpoint contradicted),
    avd_trained (whether ``src`` holds an AVD network) and epoch. Raises :class:`CpabanimError` when the
    checkpoint does not load strictly into the model it describes.
    """
    from cpabanim.config.typed import ModelConfig
    from cpabanim.models.checkpoint import model_params_problem, save_checkpoint
    from cpabanim.models.full import AnimationModel

    src, dst = Path(src), Path(dst)
    checkpoint = read_tpsmm_checkpoint(src)
    params = infer_model_params(checkpoint, preset_model_params)
    overridden = sorted(k for k in params if k in preset_model_params and preset_model_params[k] != params[k])
    problem = model_params_problem(params)  # sizes read from the tensors: bounded before anything is built
    if problem:
        raise CpabanimError(f"{src} describes a model cpabanim does not build ({problem}); {FIX}")
    model = AnimationModel(ModelConfig.from_mapping(params))
    state = tpsmm_state_dict(checkpoint)
    avd_trained = isinstance(checkpoint.get("avd_network"), Mapping)
    if not avd_trained:  # TPSMM's main training saves no AVD network: keep ours as initialised (animate avd: no)
        state.update({f"avd.{k}": v for k, v in model.avd.state_dict().items()})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CpabanimError(
            f"{src} does not load into the model it describes ({params['num_cpab']} x 5 keypoints, "
            f"generator {params['generator']}, dense motion {params['dense_motion']}): {exc}"
        ) from exc
    epoch = int(checkpoint.get("epoch", 0))
    save_checkpoint(
        dst,
        model,
        step=0,
        epoch=epoch,
        params={"model": params},
        complete=True,
        extra={"imported_from": {"format": "tpsmm", "path": str(src), "epoch": epoch}, "avd_trained": avd_trained},
    )
    log.info(
        "imported %s (TPSMM, epoch %d, %d x 5 keypoints%s) -> %s",
        src,
        epoch,
        params["num_cpab"],
        ", with AVD" if avd_trained else ", no AVD network",
        dst,
    )
    return {
        "model_params": params,
        "overridden": overridden,
        "avd_trained": avd_trained,
        "epoch": epoch,
        "path": str(dst),
    }


def _as_state_dict(source: Any) -> dict[str, torch.Tensor]:
    """A path or dict (TPSMM checkpoint, cpabanim checkpoint or flat state dict) -> state dict in our names."""
    if isinstance(source, (str, Path)):
        from cpabanim.weights import safe_torch_load

        source = safe_torch_load(
            Path(source), "checkpoint to start from", "give a cpabanim checkpoint (last.pt) or a TPSMM .pth.tar"
        )
    if not isinstance(source, Mapping):
        raise CpabanimError(f"cannot warm-start from a {type(source).__name__}: expected a checkpoint dict")
    if is_tpsmm_checkpoint(source):
        return tpsmm_state_dict(source)
    if isinstance(source.get("model"), Mapping):  # cpabanim checkpoint
        return dict(source["model"])
    return {_strip_module(k): v for k, v in source.items() if isinstance(v, torch.Tensor)}


def _leading_slice(a: torch.Size, b: torch.Size) -> tuple[slice, ...]:
    """The leading block shared by two shapes of the same rank, e.g. (12, 151, 7, 7) & (11, 148, 7, 7)."""
    return tuple(slice(0, min(x, y)) for x, y in zip(a, b))


@torch.no_grad()
def warm_start(model: nn.Module, state_dict_or_checkpoint: Any) -> dict[str, list[str]]:
    """Load what fits of a TPSMM or cpabanim checkpoint (or a state dict, or a path to either) into ``model``.

    - same name and shape: loaded;
    - dense-motion tensors of the same rank whose size depends on the number of transforms (first layer,
      contribution-map layer, the blocks after the finest level): their leading block is loaded, the rest keeps
      the model's own (fresh) initialisation -- "sliced";
    - anything else the model has: left as initialised -- "fresh" (a mismatch outside the dense motion network,
      e.g. another keypoint count, is logged as a warning). The CPAB bases an older checkpoint saved are ignored.
    Returns {"loaded", "sliced", "fresh", "unused"} lists of tensor names (``unused``: in the source only).
    """
    source = _as_state_dict(state_dict_or_checkpoint)
    target = model.state_dict()
    report: dict[str, list[str]] = {
        "loaded": [],
        "sliced": [],
        "fresh": [],
        "unused": sorted(k for k in set(source) - set(target) if not k.startswith(DERIVED_PREFIX)),
    }
    for name, tensor in target.items():
        value = source.get(name)
        if value is None:
            report["fresh"].append(name)
        elif value.shape == tensor.shape:
            tensor.copy_(value.to(tensor.dtype))
            report["loaded"].append(name)
        elif name.startswith(SLICEABLE_PREFIX) and value.dim() == tensor.dim():
            block = _leading_slice(tensor.shape, value.shape)
            tensor[block].copy_(value[block].to(tensor.dtype))
            report["sliced"].append(name)
        else:
            log.warning(
                "warm start: %s has shape %s in the checkpoint and %s in the model: left fresh",
                name,
                tuple(value.shape),
                tuple(tensor.shape),
            )
            report["fresh"].append(name)
    log.info(
        "warm start: %d tensors loaded, %d sliced, %d fresh, %d unused",
        len(report["loaded"]),
        len(report["sliced"]),
        len(report["fresh"]),
        len(report["unused"]),
    )
    return report


__all__ = [
    "convert_tpsmm_checkpoint",
    "warm_start",
    "tpsmm_state_dict",
    "infer_model_params",
    "is_tpsmm_checkpoint",
    "read_tpsmm_checkpoint",
]
