"""The embedded default dataset: real photographs animated by smooth articulated + diffeomorphic motion.

Offline and deterministic. Each video shows one *object* cut from a real photograph that ships inside the
scikit-image wheel (astronaut, chelsea, coffee, ...): an elliptical body carrying the centre of the photo,
with two limbs (strips of the same photo) that swing about joints on the body. Over time the body
translates, rotates and breathes (scale), its texture is bent by a smooth, invertible sinusoidal
deformation (a diffeomorphism: the amplitude keeps the Jacobian positive), and the limbs rotate
independently: articulated motion, the thing keypoint-based animation models are built for. The
background is another photograph, zoomed and dimmed; it stays still unless ``MOTION["pan"]`` makes it pan.
The amplitudes (``MOTION``) are moderate so that the embedded default learns visibly within ``make run``'s
few CPU minutes (docs/model.md, "Does it learn?"). Consecutive frames are warped
versions of the same photo, so a source/driving pair is a genuine image-animation task.

``data.synthetic.motion`` picks the amplitudes from :data:`MOTION_SIZES`: ``small`` is ``MOTION`` itself (the
default: the same frames, byte for byte, as before the setting existed), ``medium`` and ``large`` turn, swing,
breathe and bend the object more (docs/data.md, "Motion size"). :func:`motion_parameters` gives a video's
ground-truth motion per frame (:class:`MotionTrack`); :mod:`cpabanim.data.synthetic_truth` turns it into
keypoints and dense warps between two frames.

Identities are the photographs: a video is named ``<photo>.<split><index>`` (``astronaut.test003``: the photo
is the part before the separator, :mod:`cpabanim.data.names`) so that ``id_sampling`` works.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from cpabanim.data.names import join_parts

# colour photographs bundled in the scikit-image wheel (no pooch, no network)
OBJECT_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")
BACKGROUND_PHOTOS = ("hubble_deep_field", "coffee", "rocket", "astronaut", "chelsea", "immunohistochemistry")
_SPLIT_CODE = {"train": 1, "test": 2}
_SUPERSAMPLE = 2  # render at 2x and shrink with area interpolation: anti-aliased edges

# Peak amplitude of each motion parameter (every one is amplitude * U[0.6, 1] * sin(w t + p)). The embedded
# default must visibly learn in a few hundred CPU steps (docs/model.md, "Does it learn?"), so the motion is
# moderate: the object translates by up to 8 % of the frame, turns by up to 0.2 rad, breathes by 6 %, bends
# slightly, and its limbs swing by up to 0.5 rad over a still background. Until issue 13 it was
# shift 0.12, rotation 0.35, scale 0.10, bend 0.07, limb 0.7 and a background pan of 0.5.
MOTION = {
    "shift": 0.08,  # centre translation, fraction of the frame
    "rotation": 0.2,  # radians
    "scale": 0.06,  # relative size change
    "bend": 0.03,  # diffeomorphic displacement amplitude (< 1/pi keeps it invertible)
    "limb": 0.5,  # joint angles, radians
    "pan": 0.0,  # background pan, fraction of the room the larger background photo leaves
}
# data.synthetic.motion: larger rotations, limb swings and scale changes between frames, the same kinds of motion.
# ``small`` IS ``MOTION`` (the same dict: a test's monkeypatch of MOTION reaches it). ``large`` stays within what
# the generator and the evaluation's synthetic keypoints handle: bend * pi < 1 keeps the bend invertible, a turn
# below 45 degrees keeps the body's top/bottom and left/right axes apart, the background never pans. Its shift and
# bend are the amplitudes of the embedded default before issue 13.
MOTION_SIZES = {
    "small": MOTION,
    "medium": {"shift": 0.10, "rotation": 0.4, "scale": 0.12, "bend": 0.05, "limb": 0.9, "pan": 0.0},
    "large": {"shift": 0.12, "rotation": 0.7, "scale": 0.20, "bend": 0.07, "limb": 1.3, "pan": 0.0},
}
# the object's shape, in fractions of the frame side (render_video, cpabanim.data.synthetic_truth)
BODY_AXES = (0.26, 0.32)  # body ellipse half-axes (x, y)
LIMB_LENGTH, LIMB_WIDTH = 0.30, 0.10
JOINT_RADIUS = 0.85  # a joint sits on the body's ellipse scaled by this
TEXTURE_ZOOM = 1.2  # the body shows the photo's centre, this many half-axes wide


@functools.lru_cache(maxsize=None)
def photo(name: str, size: int) -> np.ndarray:
    """A scikit-image sample photograph, centre-cropped square and resized: ``uint8 (size, size, 3)``."""
    import cv2
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = image[..., :3]
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    image = image[top : top + side, left : left + side]
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=cv2.INTER_AREA)


def _rotation(angle: np.ndarray | float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]], dtype=np.float64)


def _smooth_step(distance: np.ndarray, width: float) -> np.ndarray:
    """1 inside (distance <= 0), 0 outside, a soft ramp ``width`` pixels wide: alpha of a layer."""
    return np.clip(0.5 - distance / width, 0.0, 1.0)


class Motion:
    """Smooth periodic trajectories of one video: every parameter is ``a * sin(w t + p)``, ``a`` from ``amplitudes``
    (one of :data:`MOTION_SIZES`; None: :data:`MOTION`)."""

    def __init__(self, rng: np.random.Generator, num_frames: int, amplitudes: Mapping[str, float] | None = None):
        def wave(amplitude: float) -> tuple[float, float, float]:
            cycles = rng.uniform(0.5, 1.5)
            return amplitude * rng.uniform(0.6, 1.0), 2 * math.pi * cycles / num_frames, rng.uniform(0, 2 * math.pi)

        a = MOTION if amplitudes is None else amplitudes
        self.shift_x, self.shift_y = wave(a["shift"]), wave(a["shift"])  # fraction of the frame
        self.rotation = wave(a["rotation"])  # radians
        self.scale = wave(a["scale"])
        self.bend_x, self.bend_y = wave(a["bend"]), wave(a["bend"])  # diffeomorphic displacement amplitude (< 1/pi)
        self.bend_phase = rng.uniform(0, 2 * math.pi, size=2)
        self.limbs = [wave(a["limb"]), wave(a["limb"])]  # joint angles, radians
        self.limb_base = [rng.uniform(-0.4, 0.4) + math.pi / 2, rng.uniform(-0.4, 0.4) - math.pi / 2]
        self.pan = wave(a["pan"])

    @staticmethod
    def at(wave: tuple[float, float, float], t: float) -> float:
        amplitude, omega, phase = wave
        return amplitude * math.sin(omega * t + phase)

    def track(self, num_frames: int) -> MotionTrack:
        """The parameters of frames 0 .. num_frames - 1 (what :func:`render_video` draws)."""
        frames = range(num_frames)
        rotation = [self.at(self.rotation, t) for t in frames]
        swings = [[self.at(wave, t) for wave in self.limbs] for t in frames]
        limb_angles = [[a + b + s for b, s in zip(self.limb_base, swing)] for a, swing in zip(rotation, swings)]
        return MotionTrack(
            centre=np.array([0.5 + np.array([self.at(self.shift_x, t), self.at(self.shift_y, t)]) for t in frames]),
            rotation=np.array(rotation),
            scale=np.array([1.0 + self.at(self.scale, t) for t in frames]),
            bend=np.array([[self.at(self.bend_x, t), self.at(self.bend_y, t)] for t in frames]),
            limb_angles=np.array(limb_angles),
            pan=np.array([self.at(self.pan, t) for t in frames]),
            bend_phase=np.array(self.bend_phase),
            limb_base=np.array(self.limb_base),
        )


@dataclass(frozen=True)
class MotionTrack:
    """The ground-truth motion of one video of T frames, per frame; lengths in fractions of the frame side, (x, y)
    from the top-left corner, angles in radians (image axes: y down, so a positive angle turns clockwise on screen).

    ``centre`` (T, 2): the body's centre; ``rotation`` (T,): the body's turn; ``scale`` (T,): its size (1 = rest);
    ``bend`` (T, 2): the amplitude of the texture's bend along x and y (body units; :func:`bend_offset`);
    ``limb_angles`` (T, 2): each limb's direction (the body's turn + the limb's rest angle ``limb_base`` + its
    swing); ``pan`` (T,): the background's pan (0 when it stands still); per video: ``bend_phase`` (2,),
    ``limb_base`` (2,).
    """

    centre: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    bend: np.ndarray
    limb_angles: np.ndarray
    pan: np.ndarray
    bend_phase: np.ndarray
    limb_base: np.ndarray


def amplitudes_of(motion: str | None) -> Mapping[str, float]:
    """The amplitudes of ``data.synthetic.motion`` (None: :data:`MOTION`, the default ``small``)."""
    if motion is None:
        return MOTION
    if motion not in MOTION_SIZES:
        raise ValueError(f"data.synthetic.motion must be one of {sorted(MOTION_SIZES)}, got {motion!r}")
    return MOTION_SIZES[motion]


def video_rng(split: str, index: int, seed: int) -> np.random.Generator:
    """The generator of video ``index`` of ``split``: its motion is the first thing drawn from it."""
    return np.random.default_rng([seed, _SPLIT_CODE[split], 1, index])


def motion_parameters(split: str, index: int, num_frames: int, seed: int, motion: str | None = None) -> MotionTrack:
    """The ground-truth motion of video ``index`` of ``split`` (as :func:`generate` numbers them) for
    ``data.synthetic.motion`` = ``motion``: the parameters its frames were drawn with (no frame is rendered)."""
    return Motion(video_rng(split, index, seed), num_frames, amplitudes_of(motion)).track(num_frames)


def bend_offset(u: np.ndarray, bend: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """The body texture's bend at body coordinates ``u`` (..., 2) (units of the half-axes, the ellipse is the unit
    disc): (..., 2), a smooth displacement whose amplitudes ``bend`` (2,) stay below 1/pi (so ``u + offset`` is
    invertible)."""
    return np.stack(
        [
            bend[0] * np.sin(math.pi * u[..., 1] + phase[0]),
            bend[1] * np.sin(math.pi * u[..., 0] + phase[1]),
        ],
        axis=-1,
    )


def background_layer(photo_name: str, big: int) -> np.ndarray:
    """The background photo of a video rendered at ``big`` px (the supersampled size): 1.3x larger, dimmed,
    float32 (1.3 big, 1.3 big, 3); a frame shows the crop :func:`background_crop` takes."""
    return (photo(photo_name, int(big * 1.3)).astype(np.float32) * 0.55 + 20.0).astype(np.float32)


def background_crop(layer: np.ndarray, big: int, pan: float) -> np.ndarray:
    """The ``big`` x ``big`` part of ``layer`` a frame shows at pan position ``pan`` (``MOTION["pan"]``'s wave
    value; 0 when the background stands still)."""
    offset = (pan + 0.5) * (layer.shape[0] - big) * 0.9
    return layer[int(offset) : int(offset) + big, int(offset * 0.6) : int(offset * 0.6) + big]


def still_background(photo_name: str, size: int) -> np.ndarray:
    """What a frame of ``size`` px shows of background ``photo_name`` where no object covers it, while
    ``MOTION["pan"]`` is 0: uint8 (size, size, 3) (the evaluation's synthetic keypoints find the object with it)."""
    import cv2

    big = size * _SUPERSAMPLE
    frame = np.clip(np.rint(background_crop(background_layer(photo_name, big), big, 0.0)), 0, 255).astype(np.uint8)
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def render_video(
    object_photo: str,
    background_photo: str,
    num_frames: int,
    size: int,
    rng: np.random.Generator,
    amplitudes: Mapping[str, float] | None = None,
) -> np.ndarray:
    """One synthetic video ``uint8 (num_frames, size, size, 3)``: an articulated photo object over a background,
    moving with ``amplitudes`` (None: :data:`MOTION`)."""
    import cv2

    big = size * _SUPERSAMPLE
    texture = photo(object_photo, big).astype(np.float32)
    background = background_layer(background_photo, big)
    track = Motion(rng, num_frames, amplitudes).track(num_frames)
    ys, xs = np.mgrid[0:big, 0:big].astype(np.float64) + 0.5
    axes = np.array(BODY_AXES) * big  # body ellipse half-axes (x, y)
    limb_length, limb_width = LIMB_LENGTH * big, LIMB_WIDTH * big
    frames = []
    for t in range(num_frames):
        # background: a slow pan over a larger photo
        canvas = background_crop(background, big, track.pan[t]).copy()

        centre = big * track.centre[t]
        angle, scale = track.rotation[t], track.scale[t]
        inverse = _rotation(-angle) / scale
        # body-frame coordinates of every pixel, in units of the half-axes (ellipse = unit disc)
        offset = np.stack([xs - centre[0], ys - centre[1]], axis=-1) @ inverse.T
        u = offset / axes

        # limbs first (the body covers their joints)
        for base, limb_angle in zip(track.limb_base, track.limb_angles[t]):
            joint_body = axes * np.array([math.cos(base), math.sin(base)]) * JOINT_RADIUS
            joint = centre + scale * (_rotation(angle) @ joint_body)
            v = np.stack([xs - joint[0], ys - joint[1]], axis=-1) @ _rotation(-limb_angle).T / scale
            inside = np.maximum(np.maximum(-v[..., 0], v[..., 0] - limb_length), np.abs(v[..., 1]) - limb_width / 2)
            alpha = _smooth_step(inside, _SUPERSAMPLE)[..., None]
            # the limb carries a strip of the photo next to where it is attached
            anchor = big / 2 + joint_body * 1.1
            direction = np.array([math.cos(base), math.sin(base)])
            normal = np.array([-direction[1], direction[0]])
            tex = anchor + v[..., :1] * direction + v[..., 1:] * normal
            layer = cv2.remap(
                texture,
                tex[..., 0].astype(np.float32),
                tex[..., 1].astype(np.float32),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
            canvas = canvas * (1 - alpha) + layer * alpha

        # body: the photo's centre, bent by a smooth invertible displacement field
        tex = big / 2 + (u + bend_offset(u, track.bend[t], track.bend_phase)) * axes * TEXTURE_ZOOM
        layer = cv2.remap(
            texture,
            tex[..., 0].astype(np.float32),
            tex[..., 1].astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        radius = np.linalg.norm(u, axis=-1)
        alpha = _smooth_step((radius - 1.0) * axes.min(), _SUPERSAMPLE)[..., None]
        canvas = canvas * (1 - alpha) + layer * alpha
        frame = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        frames.append(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(frames)


def video_plan(split: str, count: int, seed: int) -> list[tuple[str, str, str]]:
    """``(video_id, object_photo, background_photo)`` for each video of a split, deterministic."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], 0])
    plan = []
    for index in range(count):
        # train cycles through every photo; test does too, starting elsewhere, with different motions
        obj = OBJECT_PHOTOS[(index + (0 if split == "train" else 3)) % len(OBJECT_PHOTOS)]
        choices = [b for b in BACKGROUND_PHOTOS if b != obj]
        background = choices[int(rng.integers(len(choices)))]
        plan.append((join_parts(obj, f"{split}{index:03d}"), obj, background))
    return plan


def render_planned(
    split: str,
    index: int,
    planned: tuple[str, str, str],
    num_frames: int,
    size: int,
    seed: int,
    motion: str | None = None,
):
    """The video ``planned`` (an entry of :func:`video_plan`), number ``index`` of ``split``, with
    ``data.synthetic.motion`` = ``motion`` (None: ``small``): uint8 (T, S, S, 3), the same whatever else is rendered
    (its own generator)."""
    return render_video(planned[1], planned[2], num_frames, size, video_rng(split, index, seed), amplitudes_of(motion))


def generate(
    split: str, count: int, num_frames: int, size: int, seed: int, motion: str | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(video_id, uint8 (num_frames, size, size, 3))`` for each synthetic video of ``split`` (``motion``:
    ``data.synthetic.motion``, None: ``small``)."""
    for index, planned in enumerate(video_plan(split, count, seed)):
        yield planned[0], render_planned(split, index, planned, num_frames, size, seed, motion)
