"""Geometry of the synthetic shapes: outlines, rasterisation and masks to COCO polygons.

Shapes are sampled as polygons centred at the origin (:func:`shape_polygons`), placed and
rasterised with cv2's sub-pixel fixed-point drawing (:func:`rasterize`). Masks become COCO
polygons traced with ``cv2.findContours(RETR_CCOMP)`` (:func:`mask_to_polygons`); holes (a
ring's hole, or an occluder lying inside an object) are encoded with the cut-polygon trick:
each hole is joined to its outer boundary by a zero-width bridge, which the even-odd
rasterisation of pycocotools (used by mmdet and by the COCO evaluation) turns back into the
exact mask. The contours are traced on a 2x upsampled mask so the polygon runs a quarter pixel
inside the mask border and decodes pixel-exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

_SHIFT = 4  # fixed-point bits for sub-pixel cv2 drawing
_ONE = 1 << _SHIFT


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
        name (str): One of :data:`.coco.CLASSES` (also ``'ellipse'`` and ``'blob'``, used for
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


def _outside(polys: Sequence[np.ndarray], cx: float, cy: float, w: int, h: int) -> bool:
    """Whether a shape placed at ``(cx, cy)`` is cut by the image border."""
    pts = np.concatenate(polys) + (cx, cy)
    return bool(pts.min() < -0.5 or pts[:, 0].max() > w - 0.5 or pts[:, 1].max() > h - 0.5)


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


def _has_hole(mask: np.ndarray) -> bool:
    """Whether a mask has a hole (a background region it encloses)."""
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] != -1).any())
