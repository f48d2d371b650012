"""Drawing the synthetic images: textures, backgrounds with clutter, shapes with occlusion.

The images are deliberately not trivial: textured and cluttered backgrounds with unannotated
distractors (thin lines and arcs, elongated ellipses, irregular blobs), textured objects
(stripes, checker, noise, gradients) whose colour is sometimes close to the background, a
wide scale range, random rotations, overlaps and occlusion, mild blur and noise; a difficulty
preset (:data:`PRESETS`) sets how much of each.

Instances describe what is visible: a shape drawn later occludes the earlier ones and is
subtracted from their masks. A placement that would leave an earlier instance with less than
``MIN_VISIBLE_FRACTION`` of its area (or fewer than a few pixels) visible is rejected and
re-sampled, so every drawn object is annotated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import cv2
import numpy as np

from .geometry import _ONE, _SHIFT, _outside, _rotate, polygon_area, rasterize, shape_polygons

#: An instance is kept only if at least this fraction of its full area stays visible.
MIN_VISIBLE_FRACTION = 0.25

#: An object may be cut by the image border, but at least this fraction must be inside.
MIN_INSIDE_FRACTION = 0.5

# The 'medium' preset below, also the base of 'faint'.
_MEDIUM: dict[str, Any] = dict(
    instances=(2, 7),
    min_size_px=16.0,
    max_size_frac=0.4,
    min_visible_px=30,
    textures=dict(solid=0.5, stripes=0.15, checker=0.1, noise=0.05, gradient=0.2),
    background=dict(gradient=0.35, smooth_noise=0.2, stripes=0.1, checker=0.05, plain=0.3),
    bg_contrast=40.0,
    camouflage_prob=0.05,
    lines=(1, 6),
    arcs=(0, 3),
    ellipses=(0, 2),
    blobs=(0, 1),
    occluders=(0, 1),
    blur_prob=0.4,
    max_blur_sigma=0.6,
    max_noise_sigma=3.0,
    place_tries=10,
)

# Style of each difficulty level. Sizes are the diameters of the shapes' circumcircles.
PRESETS: dict[str, dict[str, Any]] = {
    'easy': dict(
        instances=(1, 4),
        min_size_px=16.0,
        max_size_frac=0.4,
        min_visible_px=40,
        textures=dict(solid=1.0),
        background=dict(plain=0.6, gradient=0.4),
        bg_contrast=20.0,
        camouflage_prob=0.0,
        lines=(0, 2),
        arcs=(0, 0),
        ellipses=(0, 1),
        blobs=(0, 0),
        occluders=(0, 0),
        blur_prob=0.0,
        max_blur_sigma=0.0,
        max_noise_sigma=0.0,
        place_tries=12,
    ),
    # The reference models' data: textured shapes over textured backgrounds with clutter,
    # overlaps and occlusion, but fewer and less camouflaged than 'hard', so a small Swin
    # detector trained from scratch on a CPU gets to a meaningful AP.
    'medium': _MEDIUM,
    # 'medium' with half of the shapes camouflaged (their colour within +-30 per channel of
    # the local background): faint outlines beside the clutter's strong edges (a probe for a
    # detector that W4A4 quantization costs more; see the model card).
    'faint': dict(_MEDIUM, camouflage_prob=0.5),
    'hard': dict(
        instances=(3, 12),
        min_size_px=12.0,
        max_size_frac=0.45,
        min_visible_px=20,
        textures=dict(solid=0.3, stripes=0.2, checker=0.15, noise=0.15, gradient=0.2),
        background=dict(gradient=0.25, smooth_noise=0.3, stripes=0.15, checker=0.1, plain=0.2),
        bg_contrast=70.0,
        camouflage_prob=0.15,
        lines=(3, 14),
        arcs=(2, 8),
        ellipses=(1, 5),
        blobs=(1, 4),
        occluders=(0, 2),
        blur_prob=0.7,
        max_blur_sigma=0.9,
        max_noise_sigma=6.0,
        place_tries=8,
    ),
}


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    """Pick a key of ``probs`` with the given (unnormalised) probabilities."""
    keys = list(probs)
    p = np.array([probs[k] for k in keys], np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """Return a random colour (3 floats in ``[0, 255]``)."""
    return rng.uniform(0, 255, 3)


def _second_colour(rng: np.random.Generator, c1: np.ndarray, contrast: float) -> np.ndarray:
    """Return a colour about ``contrast`` away from ``c1`` (clipped to the valid range)."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction) + 1e-6
    c2 = c1 + direction * contrast * rng.uniform(0.6, 1.4)
    # Clipping can collapse the contrast: mirror into the valid range instead.
    c2 = np.where(c2 > 255, 2 * c1 - c2, c2)
    c2 = np.where(c2 < 0, 2 * c1 - c2, c2)
    return np.clip(c2, 0, 255)


def texture(
    kind: str,
    height: int,
    width: int,
    c1: np.ndarray,
    c2: np.ndarray,
    rng: np.random.Generator,
    scale: float = 1.0,
) -> np.ndarray:
    """Render a ``(height, width, 3)`` float32 texture.

    Args:
        kind (str): ``'plain'``/``'solid'``, ``'stripes'``, ``'checker'``, ``'noise'``,
            ``'smooth_noise'`` or ``'gradient'``.
        height (int): Height in pixels.
        width (int): Width in pixels.
        c1 (np.ndarray): First colour.
        c2 (np.ndarray): Second colour (stripes, checker, gradient and noise amplitude).
        rng (np.random.Generator): Source of the texture's random parameters.
        scale (float): Multiplies the texture period (stripes, checker, smooth noise).

    Returns:
        np.ndarray: The texture.
    """
    c1 = np.asarray(c1, np.float32)
    c2 = np.asarray(c2, np.float32)
    if kind in ('plain', 'solid'):
        return np.broadcast_to(c1, (height, width, 3)).astype(np.float32)
    if kind == 'noise':
        amp = float(np.linalg.norm(c2 - c1)) / 3 + 4
        noise = rng.normal(0.0, amp, (height, width, 1)).astype(np.float32)
        return c1 + noise
    if kind == 'smooth_noise':
        cell = max(2.0, scale * rng.uniform(8, 40))
        lh, lw = max(2, int(height / cell) + 2), max(2, int(width / cell) + 2)
        low = rng.uniform(0, 1, (lh, lw)).astype(np.float32)
        t = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
        t = np.clip(t, 0, 1)[..., None]
        return c1 + (c2 - c1) * t
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, math.pi)
    u = xs * math.cos(theta) + ys * math.sin(theta)
    if kind == 'gradient':
        span = max(float(u.max() - u.min()), 1.0)
        t = ((u - u.min()) / span)[..., None]
        return c1 + (c2 - c1) * t
    if kind == 'stripes':
        period = scale * rng.uniform(3.0, 10.0)
        duty = rng.uniform(0.35, 0.65)
        t = ((u / period + rng.uniform()) % 1.0 < duty)[..., None]
        return np.where(t, c2, c1).astype(np.float32)
    if kind == 'checker':
        cell = scale * rng.uniform(3.0, 8.0)
        v = -xs * math.sin(theta) + ys * math.cos(theta)
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2 == 1)[..., None]
        return np.where(t, c2, c1).astype(np.float32)
    raise ValueError(f'unknown texture {kind!r}')


def paint(
    img: np.ndarray,
    mask: np.ndarray,
    kind: str,
    c1: np.ndarray,
    c2: np.ndarray,
    rng: np.random.Generator,
    scale: float = 1.0,
) -> None:
    """Fill ``img`` (float32, in place) with a texture where ``mask`` is True."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    tex = texture(kind, int(y1 - y0), int(x1 - x0), c1, c2, rng, scale)
    roi = mask[y0:y1, x0:x1]
    img[y0:y1, x0:x1][roi] = tex[roi]


def _count(rng: np.random.Generator, bounds: Sequence[int]) -> int:
    """Return a random integer in the inclusive range ``bounds``."""
    return int(rng.integers(bounds[0], bounds[1] + 1))


def draw_background(h: int, w: int, style: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Draw a textured background with unannotated clutter.

    Args:
        h (int): Image height.
        w (int): Image width.
        style (dict): A difficulty preset (see :data:`PRESETS`).
        rng (np.random.Generator): Source of randomness.

    Returns:
        np.ndarray: ``(h, w, 3)`` float32 image.
    """
    kind = _choice(rng, style['background'])
    c1 = random_colour(rng)
    c2 = _second_colour(rng, c1, style['bg_contrast'])
    img = np.ascontiguousarray(texture(kind, h, w, c1, c2, rng, scale=1.5))
    side = min(h, w)

    for _ in range(_count(rng, style['blobs'])):  # large soft blobs
        mask = _distractor_mask('blob', rng.uniform(0.08, 0.3) * side, h, w, rng)
        tone = _second_colour(rng, c1, style['bg_contrast'])
        paint(
            img,
            mask,
            _choice(rng, dict(solid=1, smooth_noise=1, gradient=1)),
            tone,
            _second_colour(rng, tone, 40),
            rng,
        )
    for _ in range(_count(rng, style['ellipses'])):
        mask = _distractor_mask('ellipse', rng.uniform(0.05, 0.25) * side, h, w, rng)
        colour = random_colour(rng)
        paint(
            img,
            mask,
            _choice(rng, dict(solid=2, stripes=1, noise=1)),
            colour,
            _second_colour(rng, colour, 60),
            rng,
        )
    for _ in range(_count(rng, style['lines'])):
        p0 = rng.uniform(-0.1, 1.1, 2) * (w, h)
        p1 = (
            p0
            + _rotate(np.array([[rng.uniform(0.1, 0.9) * side, 0.0]]), rng.uniform(0, 2 * math.pi))[
                0
            ]
        )
        cv2.line(
            img,
            tuple(int(v) for v in np.round(p0 * _ONE)),
            tuple(int(v) for v in np.round(p1 * _ONE)),
            random_colour(rng).tolist(),
            int(rng.integers(1, 4)),
            cv2.LINE_AA,
            _SHIFT,
        )
    for _ in range(_count(rng, style['arcs'])):  # thin arcs, never closed circles
        centre = rng.uniform(0, 1, 2) * (w, h)
        axes = rng.uniform(0.04, 0.3, 2) * side
        start = rng.uniform(0, 360)
        cv2.ellipse(
            img,
            tuple(int(v) for v in np.round(centre * _ONE)),
            tuple(int(v) for v in np.round(axes * _ONE)),
            rng.uniform(0, 360),
            start,
            start + rng.uniform(40, 250),
            random_colour(rng).tolist(),
            int(rng.integers(1, 3)),
            cv2.LINE_AA,
            _SHIFT,
        )
    return img


def _distractor_mask(
    name: str, radius: float, h: int, w: int, rng: np.random.Generator
) -> np.ndarray:
    """Rasterise an unannotated distractor shape at a random position."""
    polys, holes = shape_polygons(name, radius, rng.uniform(0, 2 * math.pi), rng)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    return rasterize(polys, holes, cx, cy, (h, w))


def finish(img: np.ndarray, style: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Apply mild blur and sensor noise, and quantise to ``uint8``."""
    if style['max_blur_sigma'] > 0 and rng.uniform() < style['blur_prob']:
        sigma = rng.uniform(0.3, style['max_blur_sigma'])
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if style['max_noise_sigma'] > 0:
        sigma = rng.uniform(0, style['max_noise_sigma'])
        img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def render_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    classes: Sequence[str],
    num_instances: int,
    style: dict[str, Any],
) -> tuple[np.ndarray, list[dict]]:
    """Draw one image and return it with its visible instances.

    Args:
        rng (np.random.Generator): The image's generator.
        width (int): Image width.
        height (int): Image height.
        classes (Sequence[str]): Shape names to sample from (uniformly).
        num_instances (int): Number of shapes to try to place.
        style (dict): A difficulty preset (see :data:`PRESETS`).

    Returns:
        tuple[np.ndarray, list[dict]]: The ``(h, w, 3)`` uint8 BGR image and, in drawing
        order, dicts with ``label`` (index into ``classes``), ``mask`` (visible, boolean),
        ``full_area``, ``inside_area`` (pixels inside the image before occlusion),
        ``occluded`` and ``truncated``.
    """
    h, w = height, width
    side = min(h, w)
    img = draw_background(h, w, style, rng)
    lo = min(style['min_size_px'], 0.9 * style['max_size_frac'] * side)
    hi = style['max_size_frac'] * side
    min_px = style['min_visible_px']
    instances: list[dict] = []

    def try_place(name: str, annotated: bool) -> Optional[np.ndarray]:
        """Sample placements of ``name`` until one keeps every earlier instance visible."""
        for _ in range(style['place_tries']):
            radius = 0.5 * math.exp(rng.uniform(math.log(lo), math.log(hi)))
            polys, holes = shape_polygons(name, radius, rng.uniform(0, 2 * math.pi), rng)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            mask = rasterize(polys, holes, cx, cy, (h, w))
            full = polygon_area(polys, holes)
            inside = int(mask.sum())
            if annotated and (inside < min_px or inside < MIN_INSIDE_FRACTION * full):
                continue
            if not all(_keeps_visible(inst, mask, min_px) for inst in instances):
                continue
            for inst in instances:
                inst['mask'] &= ~mask
            if annotated:
                instances.append(
                    dict(
                        label=classes.index(name),
                        mask=mask.copy(),
                        full_area=full,
                        inside_area=inside,
                        truncated=_outside(polys, cx, cy, w, h),
                    )
                )
            return mask
        return None

    for _ in range(num_instances):
        name = classes[int(rng.integers(len(classes)))]
        mask = try_place(name, annotated=True)
        if mask is None:
            continue
        if rng.uniform() < style['camouflage_prob']:  # close to the local background colour
            c1 = np.clip(img[mask].mean(axis=0) + rng.uniform(-30, 30, 3), 0, 255)
        else:
            c1 = random_colour(rng)
        kind = _choice(rng, style['textures'])
        paint(img, mask, kind, c1, _second_colour(rng, c1, rng.uniform(40, 110)), rng)

    for _ in range(_count(rng, style['occluders'])):  # unannotated distractors on top
        mask = try_place(_choice(rng, dict(ellipse=1, blob=1)), annotated=False)
        if mask is not None:
            colour = random_colour(rng)
            paint(
                img,
                mask,
                _choice(rng, dict(solid=1, noise=1, stripes=1)),
                colour,
                _second_colour(rng, colour, 60),
                rng,
            )

    for inst in instances:
        inst['occluded'] = int(np.count_nonzero(inst['mask'])) < inst['inside_area']
    return finish(img, style, rng), instances


def _keeps_visible(inst: dict, occluder: np.ndarray, min_px: int) -> bool:
    """Whether enough of an instance stays visible if ``occluder`` is drawn over it."""
    left = int(np.count_nonzero(inst['mask'] & ~occluder))
    return left >= min_px and left >= MIN_VISIBLE_FRACTION * inst['full_area']
