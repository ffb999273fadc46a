"""``synthetic_moments``: keypoints of the embedded synthetic videos' object, with no network and no weights.

Every synthetic video (:mod:`cpabanim.data.synthetic`) shows one photo object (an elliptical body with two
limbs) over a still, dimmed photograph. The extractor finds the object and describes its body by image moments,
so the keypoints correspond across identities (every body has the same shape) and follow the generator's motion:

1. background: the frame is compared with each candidate background the generator can draw
   (:func:`synthetic_background`, one per photo of ``BACKGROUND_PHOTOS``); the one that agrees with most pixels
   (within ``MATCH_TOLERANCE`` grey levels) is the frame's. A colour threshold against the border's median colour
   is not used: the backgrounds are textured photographs, and that threshold put the body centre 2-3 px off
   (the motion is ~5 px at 64 px). No candidate agreeing with ``MIN_MATCH`` of the pixels: no keypoints.
2. object: pixels differing from that background by more than ``FOREGROUND_THRESHOLD`` (any channel), closed
   by a 1-px disc (at 64 px) and holes filled (object pixels that happen to look like the background behind
   them: without this the body centre moved by up to 0.6 px on dark photos), then opened with a disc of radius
   ``OPEN_FRACTION`` x the frame side, which removes the limbs (0.10 x the side wide) and keeps the body (its
   half-axes are 0.24-0.34 x the side), then the largest connected part.
3. keypoints (5, in pixels, pixel ``i`` spanning ``[i, i + 1)`` as in the generator): the centroid, then the ends
   of the body's two principal axes at 2 sqrt(eigenvalue) from it (the half-axis of a uniform ellipse):
   ``[centre, top, bottom, left, right]``. Orientation: the principal axis closer to vertical gives top/bottom
   (top = smaller y), the other left/right (left = smaller x); the bodies are upright within 0.2 rad, so the
   labels never swap on these videos. A frame where no object is found is all NaN (MKR counts it).

Measured at 64 px (tests/eval/test_motion_transfer.py checks bounds on these): the centre is 0.1-0.2 px from the
generator's body centre on average (at most 0.4 on any frame of 24-frame videos), the orientation 0.01-0.03 rad
from its rotation. A perfect animation (the generator drawing the source identity with the driving video's
motion) scores ``transfer_akd`` ~0.85 and ``transfer_motion`` ~0.87 rather than 1 (0.94 / 0.96 at 128 px): the
floor set by the objects' textures and backgrounds; half the driving motion scores ``transfer_motion`` 0.50.
Blur is not pose, but it moves the found outline: a perfect animation blurred by a 1-px Gaussian scores ~0.67 /
~0.71, so read a blurry model's scores against that.

Contract: ``SyntheticMoments()(frames)`` maps uint8 (T, H, W, 3) RGB to float64 (T, 5, 2); it is honest only on
frames of the synthetic source (``evaluate.keypoints: auto`` selects it only there). The background is rebuilt by
:func:`synthetic_background`, the generator's own (the tests check it against ``render_video``'s pixels).
"""

from __future__ import annotations

import functools

import numpy as np

VERSION = 1  # part of the cache key: bump whenever the output for the same frames changes
FOREGROUND_THRESHOLD = 20  # grey levels (max over channels) from the background that count as object
MATCH_TOLERANCE = 12  # grey levels within which a pixel agrees with a candidate background
# fraction of pixels that must agree with the best candidate: the right one agrees on ~0.65 of a sharp frame and
# >= 0.3 of one blurred by 2 px, a wrong one on at most ~0.18 (dark regions), noise on none
MIN_MATCH = 0.2
CLOSE_FRACTION = 1 / 64  # closing radius / frame side: seals 1-px gaps in the outline so that holes get filled
OPEN_FRACTION = 0.09  # opening radius / frame side: wider than a limb (0.10), narrower than the body (>= 0.48)
KEYPOINT_NAMES = ("centre", "top", "bottom", "left", "right")


@functools.lru_cache(maxsize=None)
def synthetic_background(photo_name: str, size: int) -> np.ndarray:
    """The still background the generator draws from ``photo_name`` at ``size`` px: uint8 (size, size, 3)
    (:func:`cpabanim.data.synthetic.still_background`; valid while ``MOTION["pan"]`` is 0)."""
    from cpabanim.data import synthetic

    return synthetic.still_background(photo_name, size)


def object_mask(frame: np.ndarray, backgrounds: list[np.ndarray]) -> np.ndarray | None:
    """The body of the synthetic object in ``frame`` (uint8 (S, S, 3)) as a bool (S, S) mask, or None where no
    candidate background matches or nothing of body size differs from it (steps 1-2 of the module docstring)."""
    import cv2

    pixels = frame.astype(np.int16)
    differences = [np.abs(pixels - b.astype(np.int16)).max(axis=-1) for b in backgrounds]
    agreement = [float((d <= MATCH_TOLERANCE).mean()) for d in differences]
    best = int(np.argmax(agreement))
    if agreement[best] < MIN_MATCH:
        return None
    size = frame.shape[0]
    foreground = (differences[best] > FOREGROUND_THRESHOLD).astype(np.uint8)
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, _disc(max(1, round(CLOSE_FRACTION * size))))
    foreground = fill_holes(foreground.astype(bool))
    opened = cv2.morphologyEx(foreground.astype(np.uint8), cv2.MORPH_OPEN, _disc(max(1, round(OPEN_FRACTION * size))))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def _disc(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every region it encloses (not reachable from the frame's border) filled in."""
    import cv2

    padded = np.pad(mask.astype(np.uint8), 1)
    cv2.floodFill(padded, None, (0, 0), 1)  # the outside, reached around the 1-px frame of zeros
    return mask | (padded[1:-1, 1:-1] == 0)


def moment_keypoints(mask: np.ndarray) -> np.ndarray:
    """``[centre, top, bottom, left, right]`` (5, 2) of a bool (H, W) mask from its first and second moments
    (step 3 of the module docstring); NaN for a mask of fewer than 3 pixels."""
    rows, cols = np.nonzero(mask)
    if len(rows) < 3:
        return np.full((len(KEYPOINT_NAMES), 2), np.nan)
    points = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)  # (x, y) of pixel centres
    centre = points.mean(axis=0)
    variances, axes = np.linalg.eigh(np.cov(points.T, bias=True))  # columns of ``axes`` are unit vectors
    vertical = int(np.argmax(np.abs(axes[1])))  # the axis closer to the image's y direction
    down = axes[:, vertical] * np.sign(axes[1, vertical])
    right = axes[:, 1 - vertical] * (np.sign(axes[0, 1 - vertical]) or 1.0)
    along, across = 2.0 * np.sqrt(np.maximum(variances[[vertical, 1 - vertical]], 0.0))
    return np.stack(
        [centre, centre - along * down, centre + along * down, centre - across * right, centre + across * right]
    )


def unavailable_reason() -> str | None:
    """Why the extractor cannot be honest with the generator as it is configured, or None."""
    from cpabanim.data import synthetic

    if synthetic.MOTION["pan"] != 0:
        return (
            "synthetic_moments needs the still background it rebuilds, but cpabanim.data.synthetic.MOTION['pan'] is "
            f"{synthetic.MOTION['pan']}"
        )
    return None


class SyntheticMoments:
    """Keypoints of the synthetic object's body: uint8 (T, H, W, 3) -> (T, 5, 2), NaN where none is found."""

    def __init__(self) -> None:
        from cpabanim.data import synthetic

        problem = unavailable_reason()
        if problem is not None:
            raise RuntimeError(problem)  # make_extractor reports it as ExtractorUnavailable before getting here
        self.photos = tuple(dict.fromkeys(synthetic.BACKGROUND_PHOTOS))
        self.name = (
            f"synthetic_moments-v{VERSION}-f{FOREGROUND_THRESHOLD}-m{MATCH_TOLERANCE}-{MIN_MATCH}"
            f"-c{CLOSE_FRACTION:.4f}-o{OPEN_FRACTION}"
        )

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = np.full((len(frames), len(KEYPOINT_NAMES), 2), np.nan)
        if len(frames) == 0 or frames.shape[1] != frames.shape[2]:
            return out  # synthetic frames are square: nothing else is one of its backgrounds
        backgrounds = [synthetic_background(photo, frames.shape[1]) for photo in self.photos]
        for t, frame in enumerate(frames):
            mask = object_mask(frame, backgrounds)
            if mask is not None:
                out[t] = moment_keypoints(mask)
        return out
