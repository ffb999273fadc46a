"""The ground truth of the synthetic videos' motion: where a point of the object is in any frame, which part of the
object a pixel shows, and the dense warp between two frames, from a video's
:class:`~cpabanim.data.synthetic.MotionTrack` (:func:`cpabanim.data.synthetic.motion_parameters`) alone, without
rendering a frame.

Coordinates are fractions of the frame side, (x, y) from the top-left corner: pixel j of an S-px frame has its
centre at (j + 0.5) / S, where the renderer samples it. The object is made of three rigid-or-bent parts, drawn over a
still background (``MOTION["pan"]`` is 0 in every motion size):

- the **body**: body coordinates ``u`` (units of the half-axes: the ellipse is the unit disc) sit at
  ``centre + scale R(rotation) (u * BODY_AXES)``, and ``u`` shows the photo's point ``w = u + bend_offset(u)``: the
  *material* point, the same in every frame. Following a material point from frame to frame inverts the bend (a
  contraction: its amplitudes stay below 1/pi);
- two **limbs**: limb coordinates ``v`` (frame fractions along and across the limb) sit at
  ``joint + scale R(limb_angle) v`` and show a fixed strip of the photo, so a limb point is the same ``v`` in every
  frame.

The body covers the limbs, and the second limb the first, as :func:`cpabanim.data.synthetic.render_video` paints them;
a pixel belongs to the topmost part whose coverage there is at least one half (the renderer's soft edge).
"""

from __future__ import annotations

import math

import numpy as np

from cpabanim.data.synthetic import (
    BODY_AXES,
    JOINT_RADIUS,
    LIMB_LENGTH,
    LIMB_WIDTH,
    MotionTrack,
    bend_offset,
)

BACKGROUND, BODY, LIMBS = 0, 1, (2, 3)  # part codes of :func:`part_map`
UNBEND_ITERATIONS = 60  # the fixed point contracts by pi * bend <= 0.22 per step: 1e-16 well before 60
# keypoints on the object, 5 per part (body, limb 0, limb 1): the centre and four points around it in the body's
# material coordinates; along the limb's axis and across it, in fractions of the limb's length and width. The limbs'
# outer ends often leave the frame (a joint sits 0.27 of the frame from the centre, a limb is 0.30 long), so the
# limb points stay on their inner 60 %
BODY_POINTS = ((0.0, 0.0), (0.55, 0.0), (-0.55, 0.0), (0.0, 0.55), (0.0, -0.55))
LIMB_POINTS = ((0.1, 0.0), (0.35, 0.0), (0.6, 0.0), (0.35, 0.3), (0.35, -0.3))
POINTS_PER_PART = 5


def rotation(angle: float) -> np.ndarray:
    """The 2 x 2 rotation by ``angle`` radians (image axes: y down)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def body_to_frame(u: np.ndarray, track: MotionTrack, t: int) -> np.ndarray:
    """Body coordinates (..., 2) -> frame positions (..., 2) in frame ``t``."""
    offset = (u * np.array(BODY_AXES)) @ rotation(track.rotation[t]).T
    return track.centre[t] + track.scale[t] * offset


def frame_to_body(p: np.ndarray, track: MotionTrack, t: int) -> np.ndarray:
    """Frame positions (..., 2) -> body coordinates (..., 2) in frame ``t`` (|u| <= 1 on the body)."""
    return ((p - track.centre[t]) @ rotation(-track.rotation[t]).T) / track.scale[t] / np.array(BODY_AXES)


def material_of_body(u: np.ndarray, track: MotionTrack, t: int) -> np.ndarray:
    """The photo's point (body units) that body coordinates ``u`` (..., 2) show in frame ``t``."""
    return u + bend_offset(u, track.bend[t], track.bend_phase)


def body_of_material(w: np.ndarray, track: MotionTrack, t: int) -> np.ndarray:
    """Inverse of :func:`material_of_body`: where in frame ``t``'s body coordinates the material point ``w`` (..., 2)
    is (fixed point of ``u = w - bend(u)``)."""
    u = np.array(w, dtype=np.float64)
    for _ in range(UNBEND_ITERATIONS):
        u = w - bend_offset(u, track.bend[t], track.bend_phase)
    return u


def joint(track: MotionTrack, t: int, limb: int) -> np.ndarray:
    """Frame position (2,) of limb ``limb``'s joint in frame ``t``."""
    base = track.limb_base[limb]
    on_body = np.array([math.cos(base), math.sin(base)]) * JOINT_RADIUS
    return body_to_frame(on_body, track, t)


def limb_to_frame(v: np.ndarray, track: MotionTrack, t: int, limb: int) -> np.ndarray:
    """Limb coordinates (..., 2) (along, across; frame fractions at scale 1) -> frame positions (..., 2)."""
    return joint(track, t, limb) + track.scale[t] * (v @ rotation(track.limb_angles[t, limb]).T)


def frame_to_limb(p: np.ndarray, track: MotionTrack, t: int, limb: int) -> np.ndarray:
    """Frame positions (..., 2) -> limb ``limb``'s coordinates (..., 2) in frame ``t``."""
    return ((p - joint(track, t, limb)) @ rotation(-track.limb_angles[t, limb]).T) / track.scale[t]


def inside_limb(v: np.ndarray) -> np.ndarray:
    """Limb coordinates (..., 2) -> bool (...,): on the limb (the renderer's coverage at least one half)."""
    return (v[..., 0] >= 0) & (v[..., 0] <= LIMB_LENGTH) & (np.abs(v[..., 1]) <= LIMB_WIDTH / 2)


def part_map(p: np.ndarray, track: MotionTrack, t: int) -> np.ndarray:
    """Frame positions (..., 2) -> int (...,): the part on top there in frame ``t`` (:data:`BODY`, :data:`LIMBS`,
    :data:`BACKGROUND`)."""
    parts = np.full(p.shape[:-1], BACKGROUND, dtype=np.int64)
    for limb, code in enumerate(LIMBS):  # painted in this order: the later limb covers the earlier one
        parts[inside_limb(frame_to_limb(p, track, t, limb))] = code
    parts[np.linalg.norm(frame_to_body(p, track, t), axis=-1) <= 1.0] = BODY
    return parts


def backward_warp(p: np.ndarray, track: MotionTrack, driving: int, source: int) -> tuple[np.ndarray, np.ndarray]:
    """For positions ``p`` (..., 2) of frame ``driving``: where the same point of the scene is in frame ``source``
    (..., 2), and the part each position shows in ``driving`` (...,). The background stands still (its points stay);
    a point of the object may be hidden in ``source`` (behind the body, outside the frame): it is still where it is.

    This is the warp an animation model must produce: sampling the source frame at it gives the driving frame."""
    if np.any(track.pan != 0):
        raise ValueError("the ground-truth warp needs a still background (MOTION['pan'] = 0)")
    parts = part_map(p, track, driving)
    out = np.array(p, dtype=np.float64)
    body = parts == BODY
    material = material_of_body(frame_to_body(p[body], track, driving), track, driving)
    out[body] = body_to_frame(body_of_material(material, track, source), track, source)
    for limb, code in enumerate(LIMBS):
        on = parts == code
        out[on] = limb_to_frame(frame_to_limb(p[on], track, driving, limb), track, source, limb)
    return out, parts


def keypoints(track: MotionTrack, t: int) -> np.ndarray:
    """(15, 2) frame positions in frame ``t`` of fixed points of the object, :data:`POINTS_PER_PART` per part: the
    body's (:data:`BODY_POINTS`, material points followed through the bend), then each limb's
    (:data:`LIMB_POINTS`). The same index is the same point of the object in every frame: exact correspondences."""
    body = body_to_frame(body_of_material(np.array(BODY_POINTS), track, t), track, t)
    along = np.array(LIMB_POINTS) * np.array([LIMB_LENGTH, LIMB_WIDTH])
    limbs = [limb_to_frame(along, track, t, limb) for limb in range(len(LIMBS))]
    return np.concatenate([body, *limbs])


def pixel_centres(size: int) -> np.ndarray:
    """(size, size, 2) frame positions of the pixel centres of a ``size``-px frame, (x, y)."""
    centres = (np.arange(size) + 0.5) / size
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs, ys], axis=-1)
