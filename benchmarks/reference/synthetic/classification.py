"""Deterministic synthetic image classification data (torchvision ``ImageFolder`` layout).

:func:`generate_shapes_classification` writes ``root/{train,val}/<class>/NNNNNN.png`` and
``root/meta.json``. A class is a shape x texture combination (``'star_checker'``,
``'circle_solid'``...: 4 shapes x 3 textures = 12 classes), so neither the outline nor the
texture alone identifies it. Each image shows one target object at a random position, scale,
rotation and colour over a textured background with unannotated clutter that reuses the same
textures on smaller, other outlines (rings, crosses, elongated ellipses) plus lines, then mild
blur and noise.

Determinism follows :mod:`.coco`: every image has its own generator seeded with
``(seed, split, class, index)``, files are written with fixed settings (:mod:`.files`), and the
metadata is written last (and removed first), so an existing ``meta.json`` with the same params
means a complete set that is reused.
"""

from __future__ import annotations

import json
import math
import os
import os.path as osp
import time
from typing import Any

import cv2
import numpy as np

from mmdopq.utils.fileio import file_sha256

from .files import SPLITS, dump_json, load_params, remove_stale, write_png
from .geometry import rasterize, shape_polygons
from .rendering import _choice, _count, _second_colour, finish, paint, random_colour, texture

GENERATOR_VERSION = '1.0.0'

CLS_SHAPES = ('circle', 'square', 'triangle', 'star')
CLS_TEXTURES = ('solid', 'stripes', 'checker')

#: Class names in ``ImageFolder`` order (sorted), so label ``i`` is ``CLS_CLASSES[i]``.
CLS_CLASSES = tuple(sorted(f'{s}_{t}' for s in CLS_SHAPES for t in CLS_TEXTURES))

_SPLIT_CODES = {'train': 100, 'val': 101}
_CLUTTER_SHAPES = dict(ring=1.0, cross=1.0, ellipse=1.5)

# The 'easy' preset below, also the base of 'faint'.
_EASY: dict[str, Any] = dict(
    background=dict(plain=1, gradient=1),
    bg_contrast=20.0,
    distractors=(0, 1),
    distractor_size=(0.06, 0.12),
    distractor_textures=dict(solid=1),
    lines=(0, 1),
    target_size=(0.28, 0.4),
    target_contrast=(110.0, 160.0),
    lines_over=(0, 0),
    finish=dict(max_blur_sigma=0.4, blur_prob=0.3, max_noise_sigma=3.0),
)

#: Difficulty presets. ``'hard'`` (the default, generator 1.0.0's only style): textured
#: backgrounds, up to four distractors that reuse the class textures, lines over the target.
#: ``'easy'``: the same 12 classes and outlines on plain or gradient backgrounds with at most
#: one small solid distractor, a larger target and stronger texture contrast, which a tiny ViT
#: trained from scratch on a CPU can learn in a few dozen epochs. ``'faint'``: the easy layout
#: with one or two solid distractors and lines, and a faint texture (its two colours 12-40
#: apart instead of 110-160), so the class rests on small differences beside strong edges:
#: the reference Swin classifier's task, where W4A4 quantization costs it about 7 points.
CLS_PRESETS: dict[str, dict[str, Any]] = {
    'hard': dict(
        background=dict(plain=1, gradient=1, smooth_noise=1.5, stripes=0.5, checker=0.5),
        bg_contrast=30.0,
        distractors=(1, 4),
        distractor_size=(0.07, 0.17),
        distractor_textures=dict(solid=1, stripes=1, checker=1, noise=0.5),
        lines=(1, 4),
        target_size=(0.2, 0.36),
        target_contrast=(70.0, 130.0),
        lines_over=(0, 2),
        finish=dict(max_blur_sigma=0.6, blur_prob=0.5, max_noise_sigma=5.0),
    ),
    'easy': _EASY,
    'faint': dict(_EASY, distractors=(1, 2), lines=(1, 2), target_contrast=(12.0, 40.0)),
}


def _colour_far_from(rng: np.random.Generator, ref: np.ndarray, min_dist: float) -> np.ndarray:
    """Sample a random colour at least ``min_dist`` (Euclidean) away from ``ref``."""
    for _ in range(20):
        colour = random_colour(rng)
        if np.linalg.norm(colour - ref) >= min_dist:
            return colour
    return np.where(ref > 127, 0.0, 255.0)  # the opposite corner of the colour cube


def render_classification_image(
    rng: np.random.Generator, size: int, shape: str, kind: str, difficulty: str = 'hard'
) -> np.ndarray:
    """Draw one classification image.

    Args:
        rng (np.random.Generator): The image's generator.
        size (int): Image side in pixels.
        shape (str): Target shape, one of :data:`CLS_SHAPES`.
        kind (str): Target texture, one of :data:`CLS_TEXTURES`.
        difficulty (str): A key of :data:`CLS_PRESETS`.

    Returns:
        np.ndarray: ``(size, size, 3)`` uint8 BGR image.
    """
    if difficulty not in CLS_PRESETS:
        raise ValueError(f'difficulty must be one of {sorted(CLS_PRESETS)}, got {difficulty!r}')
    style = CLS_PRESETS[difficulty]
    s = size
    bg_kind = _choice(rng, style['background'])
    b1 = random_colour(rng)
    img = np.ascontiguousarray(
        texture(bg_kind, s, s, b1, _second_colour(rng, b1, style['bg_contrast']), rng, scale=1.5)
    )

    for _ in range(_count(rng, style['distractors'])):  # distractor outlines
        name = _choice(rng, _CLUTTER_SHAPES)
        polys, holes = shape_polygons(
            name, rng.uniform(*style['distractor_size']) * s, rng.uniform(0, 2 * math.pi), rng
        )
        mask = rasterize(polys, holes, rng.uniform(0, s), rng.uniform(0, s), (s, s))
        colour = random_colour(rng)
        paint(
            img,
            mask,
            _choice(rng, style['distractor_textures']),
            colour,
            _second_colour(rng, colour, rng.uniform(50, 120)),
            rng,
        )
    for _ in range(_count(rng, style['lines'])):
        _line(img, rng, s, thickness=int(rng.integers(1, 3)))

    radius = rng.uniform(*style['target_size']) * s  # always larger than the clutter
    polys, holes = shape_polygons(shape, radius, rng.uniform(0, 2 * math.pi), rng)
    margin = radius * 0.9
    cx, cy = rng.uniform(margin, s - margin, 2)
    mask = rasterize(polys, holes, cx, cy, (s, s))
    c1 = _colour_far_from(rng, img[mask].mean(axis=0), 60.0)
    c2 = _second_colour(rng, c1, rng.uniform(*style['target_contrast']))
    paint(img, mask, kind, c1, c2, rng)

    for _ in range(_count(rng, style['lines_over'])):  # thin lines over the target
        _line(img, rng, s, thickness=1)
    return finish(img, style['finish'], rng)


def _line(img: np.ndarray, rng: np.random.Generator, s: int, thickness: int) -> None:
    """Draw a random straight line across ``img`` (in place)."""
    p0 = np.round(rng.uniform(0, s, 2)).astype(int)
    p1 = np.round(rng.uniform(0, s, 2)).astype(int)
    cv2.line(
        img,
        (int(p0[0]), int(p0[1])),
        (int(p1[0]), int(p1[1])),
        random_colour(rng).tolist(),
        thickness,
        cv2.LINE_8,
    )


def image_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    """Return the generator of one image: independent of how many images are generated."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], label, index]))


def generate_shapes_classification(
    root: str,
    num_train_per_class: int,
    num_val_per_class: int,
    img_size: int = 64,
    seed: int = 0,
    difficulty: str = 'hard',
    force: bool = False,
) -> dict[str, Any]:
    """Generate a deterministic shape x texture classification set in ``ImageFolder`` layout.

    Args:
        root (str): Output root; gets ``train/<class>/``, ``val/<class>/`` and ``meta.json``.
        num_train_per_class (int): Training images per class.
        num_val_per_class (int): Validation images per class.
        img_size (int): Image side in pixels.
        seed (int): Dataset seed. Image ``i`` of a class only depends on
            ``(seed, split, class, i)`` and ``img_size``: N images are a prefix of N + k.
        difficulty (str): A key of :data:`CLS_PRESETS`.
        force (bool): Regenerate even if ``meta.json`` exists with the same params.

    Returns:
        dict: Summary with ``root``, ``classes``, ``num_classes``, ``params``, ``skipped``,
        ``seconds``, the ``meta_file`` and its ``sha256``, and per split ``dir`` and
        ``num_images``.
    """
    size = int(img_size)
    if size < 24:
        raise ValueError(f'img_size must be at least 24, got {size}')
    if difficulty not in CLS_PRESETS:
        raise ValueError(f'difficulty must be one of {sorted(CLS_PRESETS)}, got {difficulty!r}')
    counts = dict(train=int(num_train_per_class), val=int(num_val_per_class))
    params = dict(
        # the generator's name recorded in the files, not a module path: keep it (the files
        # of existing sets, and their reuse, depend on it)
        generator='mmdopq.synthetic_classification',
        version=GENERATOR_VERSION,
        num_train_per_class=counts['train'],
        num_val_per_class=counts['val'],
        img_size=size,
        seed=int(seed),
        classes=list(CLS_CLASSES),
    )
    if difficulty != 'hard':  # keeps the params (and meta.json) of 1.0.0's hard sets
        params['difficulty'] = difficulty
    meta_file = osp.join(root, 'meta.json')
    t0 = time.perf_counter()

    def complete() -> bool:
        """Whether ``meta.json`` has the same params and every image exists."""
        return load_params(meta_file) == params and all(
            osp.exists(osp.join(root, split, name, f'{i:06d}.png'))
            for split in SPLITS
            for name in CLS_CLASSES
            for i in range(counts[split])
        )

    skipped = not force and complete()
    if not skipped:
        os.makedirs(root, exist_ok=True)
        if osp.exists(meta_file):  # an interrupted run must not look complete
            os.remove(meta_file)
        for split in SPLITS:
            for label, name in enumerate(CLS_CLASSES):
                shape, kind = name.split('_')
                class_dir = osp.join(root, split, name)
                os.makedirs(class_dir, exist_ok=True)
                remove_stale(class_dir, counts[split])
                for index in range(counts[split]):
                    rng = image_rng(int(seed), split, label, index)
                    img = render_classification_image(rng, size, shape, kind, difficulty)
                    write_png(osp.join(class_dir, f'{index:06d}.png'), img)
        meta = dict(
            info=dict(
                description='mmdopq synthetic shape x texture classification',
                version=GENERATOR_VERSION,
                params=params,
            ),
            classes=list(CLS_CLASSES),
            num_images={s: counts[s] * len(CLS_CLASSES) for s in SPLITS},
        )
        dump_json(meta, meta_file)
    with open(meta_file) as f:
        meta = json.load(f)
    return dict(
        root=root,
        classes=list(CLS_CLASSES),
        num_classes=len(CLS_CLASSES),
        params=params,
        skipped=skipped,
        meta_file=meta_file,
        sha256=file_sha256(meta_file),
        splits={s: dict(dir=osp.join(root, s), num_images=meta['num_images'][s]) for s in SPLITS},
        seconds=round(time.perf_counter() - t0, 3),
    )
