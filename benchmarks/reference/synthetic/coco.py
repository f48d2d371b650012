"""Deterministic synthetic instance-segmentation data in COCO format ("shapes").

No dataset can be downloaded on the machines mmdopq is developed on, so calibration and test
data are generated. :func:`generate_coco_shapes` writes::

    out_dir/train/000000.png ...
    out_dir/val/000000.png ...
    out_dir/annotations/instances_train.json
    out_dir/annotations/instances_val.json

in the layout mmdet's ``CocoDataset`` reads (``data_prefix=dict(img='train/')``,
``ann_file='annotations/instances_train.json'``, ``metainfo=dict(classes=CLASSES)``). The
images are drawn by :mod:`.rendering` (every drawn object is annotated with its visible mask),
the masks become polygons by :mod:`.geometry`.

Determinism: every image is drawn from its own ``numpy.random.Generator`` seeded with
``(seed, split, index)``, so the same arguments give byte-identical files and a set of N images
is a prefix of the set of N + k images. PNGs are written with fixed settings and the JSON with
sorted keys and coordinates that are multiples of 0.25 (:mod:`.files`).
"""

from __future__ import annotations

import json
import os
import os.path as osp
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from mmdopq.utils.fileio import file_sha256

from .files import SPLITS, dump_json, load_params, remove_stale, write_png
from .geometry import _has_hole, mask_bbox, mask_to_polygons
from .rendering import PRESETS, render_image

GENERATOR_VERSION = '1.0.0'

#: Annotated shape classes, category ids ``1..K`` in this order.
CLASSES = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')

_SPLIT_CODES = {'train': 0, 'val': 1}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Return the generator of one image: independent of how many images are generated."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


def _size(img_size: Union[int, Sequence[int]]) -> tuple[int, int]:
    """Return ``(width, height)`` from an int or a ``(width, height)`` pair."""
    if isinstance(img_size, (int, np.integer)):
        return int(img_size), int(img_size)
    width, height = (int(v) for v in img_size)
    return width, height


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
        # the generator's name recorded in the files, not a module path: keep it (the files
        # of existing sets, and their reuse, depend on it)
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
