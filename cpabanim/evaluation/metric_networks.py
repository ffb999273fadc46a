"""The networks behind the metrics, each built once per evaluation: the keypoint and identity extractors chosen in
params (their results cached per video), and LPIPS / FID where their weights are already on disk.

Contract: a network that cannot be built is None with a one-line reason per metric it would have computed
(``reasons``), never an error, except a metric asked for with no extractor chosen (:class:`ConfigError`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim.errors import ConfigError
from cpabanim.evaluation.cache import ExtractionCache
from cpabanim.evaluation.extractors import ExtractorUnavailable, make_extractor
from cpabanim.evaluation.formulas import KEYPOINT_METRICS
from cpabanim.evaluation.pooling import FID_CHUNK

log = logging.getLogger(__name__)


class Extractors:
    """The keypoint and identity extractors chosen in params, built once, each None with a reason if unavailable.

    ``metrics``: the metrics asked for (an extractor is built only when one of them needs it); ``keypoints``,
    ``identity``: extractor names (:func:`~cpabanim.evaluation.extractors.make_extractor`); ``options``: the
    extractors' settings (``face_upsample``, ``pose_min_visibility``, ``reid_weights``).
    """

    def __init__(
        self,
        metrics: list[str],
        keypoints: str,
        identity: str,
        options: dict[str, Any],
        device: torch.device,
        cache: ExtractionCache,
    ) -> None:
        self.cache = cache
        self.reasons: dict[str, str] = {}
        options = {**options, "device": str(device)}
        wanted = set(metrics)
        self.keypoints = self._build("keypoints", keypoints, wanted & set(KEYPOINT_METRICS), options)
        self.identity = self._build("identity", identity, wanted & {"aed"}, options)

    def _build(self, role: str, name: str, metrics: set[str], options: dict[str, Any]):
        if not metrics:
            return None
        if name == "none":
            raise ConfigError(
                f"evaluate.metrics asks for {sorted(metrics)} but evaluate.{role} is none: choose an extractor "
                f"({'auto, or dlib_face68' if role == 'keypoints' else 'dlib_face'} for faces) or remove them "
                "from evaluate.metrics"
            )
        try:
            return make_extractor(name, options)
        except ExtractorUnavailable as err:
            for metric in metrics:
                self.reasons[metric] = f"{name} extractor unavailable: {err}"
            log.warning("%s extractor %s unavailable: %s", role, name, err)
            return None

    def keypoints_of(self, frames: np.ndarray, role: str = "generated") -> np.ndarray | None:
        """Keypoints of ``frames``; ``role``: ``reference`` for a test video's frames (counted apart: the cache
        shares them between runs), ``generated`` for a run's own."""
        return None if self.keypoints is None else self.cache(self.keypoints, frames, role)

    def identity_of(self, frames: np.ndarray, role: str = "generated") -> np.ndarray | None:
        return None if self.identity is None else self.cache(self.identity, frames, role)

    def names(self) -> dict[str, str | None]:
        """The extractors' names (model and options), which their results depend on."""
        return {role: getattr(getattr(self, role), "name", None) for role in ("keypoints", "identity")}


class OptionalNetworkMetrics:
    """LPIPS and FID (torchmetrics), computed only where their weights are already on disk (never downloaded)."""

    def __init__(self, wanted: list[str]) -> None:
        self.reasons: dict[str, str] = {}
        self.lpips = self.fid = None
        if "lpips" in wanted:
            self.lpips = self._build("lpips", "alexnet-owt-7be5be79.pth", "torchvision's AlexNet", self._new_lpips)
        if "fid" in wanted:
            self.fid = self._build(
                "fid", "weights-inception-2015-12-05-6726825d.pth", "torch-fidelity's Inception", self._new_fid
            )

    def _build(self, name: str, filename: str, network: str, factory):
        """The metric from ``factory()`` when its weights are on disk; otherwise None with the reason recorded."""
        weights = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if not weights.is_file():
            self.reasons[name] = f"{name.upper()} needs {network} weights at {weights} (not downloaded here)"
            return None
        try:
            return factory()
        except Exception as err:  # noqa: BLE001 - optional metric: any failure becomes a recorded reason
            self.reasons[name] = f"{name.upper()} unavailable: {err}"
            return None

    @staticmethod
    def _new_lpips():
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()

    @staticmethod
    def _new_fid():
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048, normalize=True)

    @torch.no_grad()
    def update(self, generated: torch.Tensor, reference: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-frame LPIPS (``lpips``) and, for FID, the Inception features of the reference and generated frames
        (``fid_real``, ``fid_fake``: FID is a set-level metric, computed from every video's features by
        :func:`cpabanim.evaluation.pooling.fid_of_features`)."""
        out = {}
        if self.lpips is not None:
            values = []
            for g, r in zip(generated.split(16), reference.split(16)):
                for gi, ri in zip(g, r):  # per frame: torchmetrics' LPIPS returns a batch mean
                    values.append(float(self.lpips(gi[None], ri[None])))
            out["lpips"] = np.asarray(values)
        if self.fid is not None:
            features: list[torch.Tensor] = []
            # the features exactly as FID's own update computes them (its input conversion included)
            hook = self.fid.inception.register_forward_hook(lambda module, args, result: features.append(result))
            try:
                for g, r in zip(generated.split(FID_CHUNK), reference.split(FID_CHUNK)):
                    self.fid.update(r, real=True)
                    self.fid.update(g, real=False)
            finally:
                hook.remove()
            out["fid_real"] = torch.cat(features[0::2]).cpu().numpy()
            out["fid_fake"] = torch.cat(features[1::2]).cpu().numpy()
        return out
