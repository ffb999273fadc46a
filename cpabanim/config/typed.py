"""One frozen dataclass per params section, for the library code: ``config.train.lr_generator``, not
``params["train"]["lr_generator"]``.

    model = ModelConfig(motion="tps", num_cpab=1)          # plain Python, the schema's defaults for the rest
    model = ModelConfig.from_mapping(params["model"])      # a dict or a frozen Section; unknown keys: ConfigError
    model.to_dict()                                        # the schema's representation (lists, nested dicts)

The schema (``cpabanim/schemas/<section>.yaml``) stays the one home of every default: :func:`schema_section`
reads ``defaults()`` and gives each annotated field its default (lists as tuples, nested sections as a
``default_factory``). No default is written here. Fields are declared in the schema's key order, so that
``to_dict()`` is the dict the schema's defaults (and so checkpoints and MLflow) have always held, key order
included. tests/test_typed_config.py checks that the fields are the schema's keys, at every depth.

The module is longer than 350 lines because it lists every field of every section (about 160 of them), each
once, beside its type; the machinery is the first 100 lines.

The keys of ``train`` that do not define what training learns live here too (:data:`TRAIN_HOW_IT_RUNS`,
:data:`TRAIN_HOW_LONG`, the avd stage's :data:`TRAIN_AVD` and :data:`TRAIN_AVD_HOW_IT_RUNS`): the stages'
declarations and the resume check read them from this one place.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from cpabanim.config.schema import defaults
from cpabanim.errors import ConfigError

C = TypeVar("C", bound="SectionConfig")

# Keys of ``train`` that say how training is fed and compiled, not what it learns: changing them never re-runs
# the train stage (its "settings"), and a run resumes across them (batches do not depend on them).
TRAIN_HOW_IT_RUNS = ("num_workers", "prefetch_factor", "channels_last", "compile")
# Keys of ``train`` that say how long to train and how often to log or save: changing them re-runs the stage but
# continues its checkpoint (a larger max_steps extends a complete run) instead of starting again.
TRAIN_HOW_LONG = ("max_steps", "num_epochs", "checkpoint_every", "log_every", "image_every")
# Keys of ``train`` that define what the avd stage learns (TPSMM's AVD schedule, with ``betas``): the avd stage's,
# never the train stage's reason to re-run (training resumes across them: its checkpoint does not record them).
TRAIN_AVD = ("avd_lr", "avd_random_scale", "avd_batch_size", "avd_epochs", "avd_repeats", "avd_milestones")
# Keys of ``train`` that say how the avd stage runs: its loader and how often it saves (never a reason to re-run).
TRAIN_AVD_HOW_IT_RUNS = ("avd_workers", "avd_checkpoint_minutes", "avd_checkpoint_every")


def _frozen(value: Any) -> Any:
    """Lists (at any depth) as tuples, so that a config is hashable and cannot be changed in place."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _plain(value: Any) -> Any:
    """Inverse of :func:`_frozen`, and nested configs as dicts: the schema's representation."""
    if isinstance(value, SectionConfig):
        return value.to_dict()
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _config_class(hint: Any) -> type[SectionConfig] | None:
    """The SectionConfig class of a field annotated ``X`` or ``X | None``, else None."""
    candidates = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, SectionConfig):
            return candidate
    return None


class SectionConfig:
    """What every section dataclass has: :meth:`from_mapping`, :meth:`to_dict`, :meth:`replace`."""

    SECTION: ClassVar[str] = ""  # dotted name in the params ("model.generator"), set by schema_section

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # ModelConfig(partial_tessellation=[4, 4]) holds a tuple too
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, _frozen(value))

    @classmethod
    def from_mapping(cls: type[C], values: Mapping[str, Any] | None) -> C:
        """From a dict or a frozen Section, recursively: missing keys take the schema's defaults, unknown keys
        raise :class:`ConfigError` naming them, lists become tuples. The values are not validated again (the
        params were validated when they were loaded)."""
        values = values or {}
        hints = get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown parameter {', '.join(f'{cls.SECTION}.{k}' for k in unknown)} "
                f"(not in cpabanim/schemas/{cls.SECTION.split('.')[0]}.yaml)"
            )
        kwargs = {}
        for key, value in values.items():
            nested = _config_class(hints[key])
            kwargs[key] = nested.from_mapping(value) if nested is not None and value is not None else _frozen(value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (lists as lists) in the schema's key order: what checkpoints and MLflow record."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def _defaults_at(section: str) -> dict[str, Any]:
    node: Any = defaults()
    for part in section.split("."):
        node = node[part]
    return node


def schema_section(section: str):
    """Class decorator: a frozen dataclass whose field defaults are the schema's defaults of ``section``.

    Only annotated fields become fields; a field the schema lacks is a TypeError at import (it would have no
    default). A schema key without a field is caught by tests/test_typed_config.py (and by from_mapping).
    """

    def wrap(cls):
        values = _defaults_at(section)
        hints = get_type_hints(cls)  # the nested sections' classes are defined above their parents
        for name in cls.__dict__.get("__annotations__", {}):
            if name not in values:
                raise TypeError(f"{cls.__name__}.{name}: {section}.{name} is not in the schema")
            nested = _config_class(hints[name])
            default = values[name]
            if nested is not None and default is not None:
                setattr(cls, name, dataclasses.field(default_factory=nested))
            else:
                setattr(cls, name, _frozen(default))
        cls.SECTION = section
        return dataclasses.dataclass(frozen=True)(cls)

    return wrap


# --------------------------------------------------------------------------------------------------------- model

Motion = Literal["cpab", "tps"]


@schema_section("model.generator")
class GeneratorConfig(SectionConfig):
    """The inpainting network."""

    block_expansion: int
    max_features: int
    num_down_blocks: int


@schema_section("model.dense_motion")
class DenseMotionConfig(SectionConfig):
    """The dense motion network (hourglass)."""

    block_expansion: int
    max_features: int
    num_blocks: int
    scale_factor: float


@schema_section("model.avd")
class AVDConfig(SectionConfig):
    """The animation-via-disentanglement network."""

    id_bottle_size: int
    pose_bottle_size: int


@schema_section("model")
class ModelConfig(SectionConfig):
    """The animation model (cpabanim/schemas/model.yaml)."""

    motion: Motion
    fit_method: Literal["lm", "adam"]
    kp_gradient: Literal["detach", "implicit"]
    backbone: Literal["resnet18", "small"]
    num_cpab: int
    num_channels: int
    bg: bool
    partial_tessellation: tuple[int, int]
    global_tessellation: tuple[int, int]
    adam_iters: int
    integrator: Literal["faithful", "fast"]
    kp_variance: float
    generator: GeneratorConfig
    dense_motion: DenseMotionConfig
    avd: AVDConfig


# ---------------------------------------------------------------------------------------------------------- loss


@schema_section("loss")
class LossConfig(SectionConfig):
    """The training objective (cpabanim/schemas/loss.yaml)."""

    perceptual: Literal["vgg", "pixel"]
    perceptual_weights: tuple[float, ...]
    scales: tuple[float, ...]
    equivariance: float
    sigma_affine: float
    sigma_tps: float
    points_tps: int
    warp: float
    bg: float
    semantic: Literal["masks", "off"]
    semantic_weight: float
    semantic_blur: float
    structure: Literal["dino", "off"]
    structure_weight: float


# --------------------------------------------------------------------------------------------------------- train


@schema_section("train")
class TrainConfig(SectionConfig):
    """The training schedule, the AVD stage's schedule and how training runs (cpabanim/schemas/train.yaml)."""

    num_epochs: int
    epoch_milestones: tuple[int, ...]
    lr_generator: float
    batch_size: int
    betas: tuple[float, float]
    weight_decay: float
    clip_grad_norm: float
    bg_start: int
    dropout_epoch: int
    dropout_maxp: float
    dropout_startp: float
    dropout_inc_epoch: int
    max_steps: int
    checkpoint_every: int
    log_every: int
    image_every: int
    avd_lr: float
    avd_random_scale: float
    avd_batch_size: int
    avd_epochs: int
    avd_repeats: int
    avd_milestones: tuple[int, ...]
    avd_workers: int | Literal["auto"]
    avd_checkpoint_minutes: float
    avd_checkpoint_every: int
    num_workers: int | Literal["auto"]
    prefetch_factor: int
    channels_last: bool
    compile: bool
    amp: Literal["auto", "off", "bf16", "fp16"]
    init_from: str | None
    processes: int | Literal["auto"]
    requeue: bool

    # Keys that say how training is launched and stopped, not what it learns (not annotated: not fields). Like
    # TRAIN_HOW_IT_RUNS, changing them never re-runs the stage and a run resumes across them (the world size does
    # change the batches: a resume with another one warns, cpabanim/training/state.py).
    HOW_IT_LAUNCHES = ("processes", "requeue")


# ---------------------------------------------------------------------------------------------------------- data


@schema_section("data.augmentation.jitter")
class JitterConfig(SectionConfig):
    """ColorJitter strengths (0 = off)."""

    brightness: float
    contrast: float
    saturation: float
    hue: float


@schema_section("data.augmentation")
class AugmentationConfig(SectionConfig):
    """Augmentations applied identically to source, driving and masks."""

    horizontal_flip: bool
    time_flip: bool
    jitter: JitterConfig | None
    resize_ratio: tuple[float, float] | None


@schema_section("data.synthetic")
class SyntheticConfig(SectionConfig):
    """The embedded synthetic dataset."""

    num_train: int
    num_test: int
    num_frames: int
    motion: Literal["small", "medium", "large"]


@schema_section("data.folder")
class FolderConfig(SectionConfig):
    """The folder source: your own videos, face-cropped."""

    dir: str
    test_fraction: float
    max_frames: int
    stride: int
    segments: int
    faces: bool
    margin: float
    smooth_sigma: float
    detect_every: int


@schema_section("data.archive")
class ArchiveConfig(SectionConfig):
    """mgif: the dataset archive."""

    url: str
    sha256: str


@schema_section("data")
class DataConfig(SectionConfig):
    """Which dataset, how it is prepared and sampled (cpabanim/schemas/data.yaml)."""

    source: Literal["synthetic", "folder", "vox", "taichi", "ted", "mgif"]
    seed: int
    frame_size: int
    shards: int
    id_sampling: bool
    num_repeats: int
    augmentation: AugmentationConfig | None
    synthetic: SyntheticConfig
    folder: FolderConfig
    metadata: str
    youtube_url: str
    source_dir: str
    archive: ArchiveConfig


# ------------------------------------------------------------------------------------------- paths and tracking


@schema_section("paths")
class PathsConfig(SectionConfig):
    """Where each stage reads and writes, relative to the project root (cpabanim/schemas/paths.yaml)."""

    raw: str
    processed: str
    masks: str
    checkpoints: str
    weights: str
    outputs: str


@schema_section("tracking")
class TrackingConfig(SectionConfig):
    """MLflow tracking (cpabanim/schemas/tracking.yaml)."""

    uri: str
    experiment: str
    enabled: bool
    log_checkpoints: bool
    compare_runs: int


@schema_section("report")
class ReportConfig(SectionConfig):
    """The comparison of experiments (cpabanim/schemas/report.yaml)."""

    reference: str | None


# ------------------------------------------------------------------------------------------------- later stages

AnimationMode = Literal["relative", "standard", "avd"]


@schema_section("evaluate")
class EvaluateConfig(SectionConfig):
    """The metrics (cpabanim/schemas/evaluate.yaml)."""

    metrics: tuple[Literal["l1", "psnr", "ssim", "akd", "mkr", "aed", "lpips", "fid"], ...]
    keypoints: Literal["none", "dlib_face68", "face_alignment", "mediapipe_pose"]
    identity: Literal["none", "dlib_face", "reid"]
    reid_weights: str | None
    face_upsample: int
    pose_min_visibility: float
    shards: int
    cache: bool
    cache_dir: str | None


@schema_section("reconstruct")
class ReconstructConfig(SectionConfig):
    """Video reconstruction (cpabanim/schemas/reconstruct.yaml)."""

    animator: Literal["checkpoint", "identity"]
    checkpoint: str | None
    batch_size: int
    shards: int
    max_videos: int
    max_frames: int
    fps: float
    mp4: bool
    gif: bool
    viewing_videos: int


@schema_section("animate")
class AnimateConfig(SectionConfig):
    """Cross-identity animation (cpabanim/schemas/animate.yaml)."""

    animator: Literal["checkpoint", "identity"]
    checkpoint: str | None
    num_pairs: int
    modes: tuple[AnimationMode, ...]
    max_frames: int
    fps: float
    mp4: bool
    gif: bool


@schema_section("masks.sam")
class SAMConfig(SectionConfig):
    """segment-anything automatic mask generation."""

    model_type: Literal["vit_b", "vit_l", "vit_h"]
    checkpoint: str
    points_per_side: int
    pred_iou_thresh: float
    stability_score_thresh: float
    min_region_area: float


@schema_section("masks.slic")
class SLICConfig(SectionConfig):
    """scikit-image SLIC superpixels."""

    n_segments: int
    compactness: float
    sigma: float


@schema_section("masks")
class MasksConfig(SectionConfig):
    """Region masks for the keypoint semantic loss (cpabanim/schemas/masks.yaml)."""

    source: Literal["slic", "sam"]
    shards: int
    every: int
    batch_frames: int
    sam: SAMConfig
    slic: SLICConfig


# params section -> its dataclass
SECTIONS: dict[str, type[SectionConfig]] = {
    "model": ModelConfig,
    "loss": LossConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "paths": PathsConfig,
    "evaluate": EvaluateConfig,
    "reconstruct": ReconstructConfig,
    "animate": AnimateConfig,
    "masks": MasksConfig,
    "tracking": TrackingConfig,
    "report": ReportConfig,
}

__all__ = [
    "SECTIONS",
    "SectionConfig",
    "schema_section",
    "TRAIN_HOW_IT_RUNS",
    "TRAIN_HOW_LONG",
    *(
        cls.__name__
        for cls in (
            ModelConfig,
            GeneratorConfig,
            DenseMotionConfig,
            AVDConfig,
            LossConfig,
            TrainConfig,
            DataConfig,
            AugmentationConfig,
            JitterConfig,
            SyntheticConfig,
            FolderConfig,
            ArchiveConfig,
            PathsConfig,
            TrackingConfig,
            ReportConfig,
            EvaluateConfig,
            ReconstructConfig,
            AnimateConfig,
            MasksConfig,
            SAMConfig,
            SLICConfig,
        )
    ),
]
