"""Deterministic synthetic instance-segmentation data in COCO format ("shapes").

No dataset can be downloaded on the machines mmdopq is developed on, so calibration and test
data are generated. :func:`generate_coco_shapes` writes::

    out_dir/train/000000.png ...
    out_dir/val/000000.png ...
    out_dir/annotations/instances_train.json
    out_dir/annotations/instances_val.json

in the layout mmdet's ``CocoDataset`` reads (``data_prefix=dict(img='train/')``,
``ann_file='annotations/instances_train.json'``, ``metainfo=dict(classes=CLASSES)``).

The images are deliberately not trivial: textured and cluttered backgrounds with unannotated
distractors (thin lines and arcs, elongated ellipses, irregular blobs), textured objects
(stripes, checker, noise, gradients) whose colour is sometimes close to the background, a
wide scale range, random rotations, overlaps and occlusion, mild blur and noise.

Annotations describe what is visible: a shape drawn later occludes the earlier ones and is
subtracted from their masks. A placement that would leave an earlier instance with less than
``MIN_VISIBLE_FRACTION`` of its area (or fewer than a few pixels) visible is rejected and
re-sampled, so every drawn object is annotated. Masks are polygons traced from the visible
masks with ``cv2.findContours(RETR_CCOMP)``; holes (a ring's hole, or an occluder lying inside
an object) are encoded with the cut-polygon trick: each hole is joined to its outer boundary by
a zero-width bridge, which the even-odd rasterisation of pycocotools (used by mmdet and by the
COCO evaluation) turns back into the exact mask. The contours are traced on a 2x upsampled mask
so the polygon runs a quarter pixel inside the mask border and decodes pixel-exactly.

Determinism: every image is drawn from its own ``numpy.random.Generator`` seeded with
``(seed, split, index)``, so the same arguments give byte-identical files and a set of N images
is a prefix of the set of N + k images. PNGs are written with fixed settings and the JSON with
sorted keys and coordinates that are multiples of 0.25.
"""

from __future__ import annotations

import json
import math
import os
import os.path as osp
import re
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

import cv2
import numpy as np

from ..utils.fileio import file_sha256

GENERATOR_VERSION = '1.0.0'

#: Annotated shape classes, category ids ``1..K`` in this order.
CLASSES = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')

#: An instance is kept only if at least this fraction of its full area stays visible.
MIN_VISIBLE_FRACTION = 0.25

#: An object may be cut by the image border, but at least this fraction must be inside.
MIN_INSIDE_FRACTION = 0.5

SPLITS = ('train', 'val')
_SPLIT_CODES = {'train': 0, 'val': 1}
_FILE_RE = re.compile(r'^\d{6}\.png$')
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]
_SHIFT = 4  # fixed-point bits for sub-pixel cv2 drawing
_ONE = 1 << _SHIFT

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


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``(N, 2)`` points about the origin by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _regular(radius: float, num: int, phase: float = 0.0) -> np.ndarray:
    """Return the ``num`` vertices of a regular polygon of circumradius ``radius``."""
    t = phase + np.arange(num) * (2 * math.pi / num)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _circle_vertices(radius: float) -> int:
    """Return the number of vertices that approximate a circle of ``radius`` px smoothly."""
    return int(np.clip(round(math.pi * radius), 16, 128))


def shape_polygons(
    name: str, radius: float, angle: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sample the outline of a shape centred at the origin.

    Args:
        name (str): One of :data:`CLASSES` (also ``'ellipse'`` and ``'blob'``, used for
            unannotated distractors).
        radius (float): Circumradius in pixels.
        angle (float): Rotation in radians.
        rng (np.random.Generator): Source of the shape's random proportions.

    Returns:
        tuple[list[np.ndarray], list[np.ndarray]]: Filled outlines and outlines of holes,
        each an ``(N, 2)`` float array of ``(x, y)`` vertices.
    """
    holes: list[np.ndarray] = []
    if name == 'circle':
        poly = _regular(radius, _circle_vertices(radius))
    elif name == 'square':
        poly = _regular(radius, 4, math.pi / 4)
    elif name == 'triangle':
        t = math.pi / 2 + np.arange(3) * (2 * math.pi / 3) + rng.uniform(-0.2, 0.2, 3)
        r = radius * rng.uniform(0.8, 1.0, 3)
        poly = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif name == 'star':
        points = int(rng.integers(5, 7))
        inner = radius * rng.uniform(0.38, 0.5)
        outer = _regular(radius, points, -math.pi / 2)
        inner_v = _regular(inner, points, -math.pi / 2 + math.pi / points)
        poly = np.stack([outer, inner_v], axis=1).reshape(-1, 2)
    elif name == 'ring':
        ratio = max(rng.uniform(0.45, 0.65), 3.0 / radius)
        poly = _regular(radius, _circle_vertices(radius))
        holes.append(_regular(radius * ratio, _circle_vertices(radius * ratio)))
    elif name == 'cross':
        w = radius * rng.uniform(0.2, 0.32)
        r = math.sqrt(max(radius**2 - w**2, 1.0))
        poly = np.array(
            [
                [w, -r],
                [w, -w],
                [r, -w],
                [r, w],
                [w, w],
                [w, r],
                [-w, r],
                [-w, w],
                [-r, w],
                [-r, -w],
                [-w, -w],
                [-w, -r],
            ]
        )
    elif name == 'ellipse':  # elongated, never mistaken for a circle
        n = _circle_vertices(radius)
        t = np.arange(n) * (2 * math.pi / n)
        minor = radius / rng.uniform(1.8, 4.0)
        poly = np.stack([radius * np.cos(t), minor * np.sin(t)], axis=1)
    elif name == 'blob':  # irregular smooth outline
        n = _circle_vertices(radius)
        t = np.arange(n) * (2 * math.pi / n)
        r = np.ones(n)
        for k in range(2, 5):
            r += rng.uniform(0.1, 0.22) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
        r *= radius / r.max()
        poly = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    else:
        raise ValueError(f'unknown shape {name!r}')
    return [_rotate(poly, angle)], [_rotate(h, angle) for h in holes]


def _fixed(poly: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Translate a polygon and convert it to cv2's fixed-point ``int32`` format."""
    pts = (poly + (cx, cy)) * _ONE
    return np.round(pts).astype(np.int32).reshape(-1, 1, 2)


def rasterize(
    polys: Sequence[np.ndarray],
    holes: Sequence[np.ndarray],
    cx: float,
    cy: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """Rasterise a shape placed at ``(cx, cy)`` into a boolean mask of ``shape`` ``(h, w)``."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [_fixed(p, cx, cy) for p in polys], 1, cv2.LINE_8, _SHIFT)
    if holes:
        cv2.fillPoly(mask, [_fixed(p, cx, cy) for p in holes], 0, cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def polygon_area(polys: Sequence[np.ndarray], holes: Sequence[np.ndarray]) -> float:
    """Return the analytic area of a shape (filled outlines minus holes)."""

    def area(p: np.ndarray) -> float:
        x, y = p[:, 0], p[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    return sum(area(p) for p in polys) - sum(area(h) for h in holes)


# --------------------------------------------------------------------------------------------
# Colours and textures
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Backgrounds, clutter and post-processing
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Masks to COCO polygons
# --------------------------------------------------------------------------------------------


def _bridge(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Join ``hole`` into ``outer`` through a zero-width cut between their closest vertices."""
    d = ((outer[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return np.concatenate([outer[: i + 1], hole[j:], hole[: j + 1], outer[i:]])


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Convert a binary mask to COCO polygons, encoding holes with the cut-polygon trick.

    The contours are traced on a 2x nearest-upsampled mask and mapped back with
    ``(u + 0.5) / 2``, so the polygon runs a quarter pixel inside the mask border: pixel
    centres of the mask are inside it, those of the background outside, and pycocotools
    decodes it back to the same mask. Each hole of a connected component is joined to the
    component's outline by a bridge traversed in both directions, which even-odd rasterisation
    (pycocotools, hence mmdet and the COCO evaluation) cancels, leaving the hole empty.
    Separate components become separate polygons (COCO takes their union).

    Args:
        mask (np.ndarray): ``(h, w)`` boolean or 0/1 mask.

    Returns:
        list[list[float]]: Polygons ``[x1, y1, x2, y2, ...]`` with at least 3 vertices each.
    """
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return []
    crop = mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1].astype(np.uint8)
    up = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(
        up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=(2 * int(xs[0]), 2 * int(ys[0]))
    )
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    polygons = []
    for idx, contour in enumerate(contours):
        if hierarchy[idx][3] != -1:  # a hole: merged into its parent below
            continue
        poly = contour[:, 0, :].astype(np.float64)
        child = hierarchy[idx][2]
        while child != -1:
            poly = _bridge(poly, contours[child][:, 0, :].astype(np.float64))
            child = hierarchy[child][0]
        if len(poly) < 3:
            continue
        poly = (poly + 0.5) / 2.0
        polygons.append([round(float(v), 2) for v in poly.reshape(-1)])
    return polygons


def mask_bbox(mask: np.ndarray) -> list[float]:
    """Return the COCO ``[x, y, w, h]`` box of a non-empty mask's pixels."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1), float(ys[-1] - ys[0] + 1)]


# --------------------------------------------------------------------------------------------
# One image
# --------------------------------------------------------------------------------------------


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Return the generator of one image: independent of how many images are generated."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


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


def _outside(polys: Sequence[np.ndarray], cx: float, cy: float, w: int, h: int) -> bool:
    """Whether a shape placed at ``(cx, cy)`` is cut by the image border."""
    pts = np.concatenate(polys) + (cx, cy)
    return bool(pts.min() < -0.5 or pts[:, 0].max() > w - 0.5 or pts[:, 1].max() > h - 0.5)


# --------------------------------------------------------------------------------------------
# Dataset writer
# --------------------------------------------------------------------------------------------


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


def write_png(path: str, img: np.ndarray) -> None:
    """Encode ``img`` (BGR or grey ``uint8``) as PNG with fixed settings, atomically."""
    ok, buf = cv2.imencode('.png', img, _PNG_PARAMS)
    if not ok:
        raise OSError(f'could not encode {path}')
    write_bytes_atomic(path, buf.tobytes())


def dump_json(obj: Any, path: str) -> None:
    """Write JSON deterministically (sorted keys, compact) and atomically."""
    text = json.dumps(obj, sort_keys=True, separators=(',', ':'), allow_nan=False)
    write_bytes_atomic(path, (text + '\n').encode('utf-8'))


def _size(img_size: Union[int, Sequence[int]]) -> tuple[int, int]:
    """Return ``(width, height)`` from an int or a ``(width, height)`` pair."""
    if isinstance(img_size, (int, np.integer)):
        return int(img_size), int(img_size)
    width, height = (int(v) for v in img_size)
    return width, height


def load_params(path: str) -> Optional[dict]:
    """Return the generator params stored in an annotation/meta file, ``None`` if unreadable."""
    try:
        with open(path) as f:
            return json.load(f)['info']['params']
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_stale(directory: str, keep: int, pattern: re.Pattern = _FILE_RE) -> None:
    """Delete generated images ``NNNNNN.png`` with an index ``>= keep`` from ``directory``."""
    if not osp.isdir(directory):
        return
    for name in os.listdir(directory):
        if pattern.match(name) and int(name.split('.')[0]) >= keep:
            os.remove(osp.join(directory, name))


def coco_stats(coco: dict) -> dict[str, Any]:
    """Summarise a COCO annotation dict: instances per image, class counts, occlusion."""
    anns = coco['annotations']
    image_ids = np.array([a['image_id'] for a in anns], np.int64)
    per_image = np.bincount(image_ids, minlength=len(coco['images']) + 1)[1:]
    names = {c['id']: c['name'] for c in coco['categories']}
    counts = {names[c['id']]: 0 for c in coco['categories']}
    for a in anns:
        counts[names[a['category_id']]] += 1
    n = max(len(anns), 1)
    return dict(
        num_images=len(coco['images']),
        num_annotations=len(anns),
        instances_per_image=dict(
            min=int(per_image.min()) if per_image.size else 0,
            mean=round(float(per_image.mean()), 2) if per_image.size else 0.0,
            max=int(per_image.max()) if per_image.size else 0,
        ),
        class_counts=counts,
        occluded_fraction=round(sum(a.get('occluded', 0) for a in anns) / n, 4),
        truncated_fraction=round(sum(a.get('truncated', 0) for a in anns) / n, 4),
        with_hole_fraction=round(sum(a.get('has_hole', 0) for a in anns) / n, 4),
        mean_area=round(sum(a['area'] for a in anns) / n, 1),
    )


def generate_coco_shapes(
    out_dir: str,
    num_train: int,
    num_val: int,
    img_size: Union[int, tuple[int, int]] = 320,
    seed: int = 0,
    min_instances: Optional[int] = None,
    max_instances: Optional[int] = None,
    classes: Sequence[str] = CLASSES,
    difficulty: str = 'hard',
    force: bool = False,
) -> dict[str, Any]:
    """Generate a deterministic COCO-format instance segmentation set of shapes.

    Args:
        out_dir (str): Output root; gets ``train/``, ``val/`` and ``annotations/``.
        num_train (int): Number of training images.
        num_val (int): Number of validation images.
        img_size (int | tuple[int, int]): Image side, or ``(width, height)``.
        seed (int): Dataset seed. Image ``i`` of a split only depends on ``(seed, split, i)``
            and the other arguments, so N images are a prefix of N + k images.
        min_instances (int, optional): Fewest shapes per image (before placements that fail
            are dropped). Defaults to the preset: 3 for ``'hard'``, 1 for ``'easy'``.
        max_instances (int, optional): Most shapes per image. Defaults to 12 (``'hard'``) or
            4 (``'easy'``).
        classes (Sequence[str]): Shapes to draw, a subset of :data:`CLASSES`; category ids
            are ``1..K`` in this order.
        difficulty (str): ``'hard'`` (textures, clutter, camouflage, occluding distractors,
            blur and noise), ``'medium'`` (the reference models' data: the same kinds of
            textures, clutter and occlusion, fewer and milder), ``'faint'`` (``'medium'``
            with half of the shapes camouflaged) or ``'easy'`` (a few plain shapes on a plain
            background, for unit tests).
        force (bool): Regenerate even if the annotation files exist with the same params.

    Returns:
        dict: Summary with ``out_dir``, ``classes``, ``params``, ``skipped`` (True when the
        existing files were reused), ``seconds``, and per split ``img_dir``, ``ann_file``,
        ``sha256`` of the annotation file and statistics (see :func:`coco_stats`).
    """
    if difficulty not in PRESETS:
        raise ValueError(f'difficulty must be one of {sorted(PRESETS)}, got {difficulty!r}')
    classes = tuple(classes)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ValueError(f'classes must be distinct names from {CLASSES}, got {classes}')
    style = PRESETS[difficulty]
    lo_n = style['instances'][0] if min_instances is None else int(min_instances)
    hi_n = style['instances'][1] if max_instances is None else int(max_instances)
    if not 0 <= lo_n <= hi_n:
        raise ValueError(f'need 0 <= min_instances <= max_instances, got {lo_n}, {hi_n}')
    width, height = _size(img_size)
    counts = dict(train=int(num_train), val=int(num_val))
    params = dict(
        generator='mmdopq.synthetic_shapes',
        version=GENERATOR_VERSION,
        num_train=counts['train'],
        num_val=counts['val'],
        width=width,
        height=height,
        seed=int(seed),
        min_instances=lo_n,
        max_instances=hi_n,
        classes=list(classes),
        difficulty=difficulty,
    )
    ann_dir = osp.join(out_dir, 'annotations')
    ann_files = {s: osp.join(ann_dir, f'instances_{s}.json') for s in SPLITS}
    img_dirs = {s: osp.join(out_dir, s) for s in SPLITS}
    t0 = time.perf_counter()

    def complete() -> bool:
        """Whether both splits exist with the same params and all their images."""
        return all(
            load_params(ann_files[s]) == params
            and all(osp.exists(osp.join(img_dirs[s], f'{i:06d}.png')) for i in range(counts[s]))
            for s in SPLITS
        )

    skipped = not force and complete()
    cocos = {}
    if skipped:
        for s in SPLITS:
            with open(ann_files[s]) as f:
                cocos[s] = json.load(f)
    else:
        os.makedirs(ann_dir, exist_ok=True)
        for s in SPLITS:  # an interrupted run must not look complete
            if osp.exists(ann_files[s]):
                os.remove(ann_files[s])
        categories = [
            dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(classes)
        ]
        for split in SPLITS:
            os.makedirs(img_dirs[split], exist_ok=True)
            remove_stale(img_dirs[split], counts[split])
            images, annotations = [], []
            for index in range(counts[split]):
                rng = image_rng(int(seed), split, index)
                num = int(rng.integers(lo_n, hi_n + 1))
                img, instances = render_image(rng, width, height, classes, num, style)
                file_name = f'{index:06d}.png'
                write_png(osp.join(img_dirs[split], file_name), img)
                image_id = index + 1
                images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
                for inst in instances:
                    mask = inst['mask']
                    polygons = mask_to_polygons(mask)
                    annotations.append(
                        dict(
                            id=len(annotations) + 1,
                            image_id=image_id,
                            category_id=inst['label'] + 1,
                            bbox=mask_bbox(mask),
                            area=float(np.count_nonzero(mask)),
                            iscrowd=0,
                            segmentation=polygons,
                            occluded=int(inst['occluded']),
                            truncated=int(inst['truncated']),
                            has_hole=int(_has_hole(mask)),
                        )
                    )
            cocos[split] = dict(
                info=dict(
                    description='mmdopq synthetic shapes (instance segmentation)',
                    version=GENERATOR_VERSION,
                    split=split,
                    params=params,
                ),
                licenses=[],
                images=images,
                annotations=annotations,
                categories=categories,
            )
            # Written last: its presence with these params marks the split as complete.
            dump_json(cocos[split], ann_files[split])

    summary: dict[str, Any] = dict(
        out_dir=out_dir, classes=list(classes), params=params, skipped=skipped, splits={}
    )
    for s in SPLITS:
        summary['splits'][s] = dict(
            img_dir=img_dirs[s],
            ann_file=ann_files[s],
            sha256=file_sha256(ann_files[s]),
            **coco_stats(cocos[s]),
        )
    summary['seconds'] = round(time.perf_counter() - t0, 3)
    return summary


def _has_hole(mask: np.ndarray) -> bool:
    """Whether a mask has a hole (a background region it encloses)."""
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] != -1).any())
