"""Tests of the deterministic synthetic dataset generators (COCO shapes, ImageFolder classes)."""

from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.reference.synthetic import (
    CLASSES,
    CLS_CLASSES,
    generate_coco_shapes,
    generate_shapes_classification,
)
from benchmarks.reference.synthetic.geometry import mask_to_polygons

# Digests of the decoded pixels and the annotation/meta bytes of tiny sets (see `_content_digest`).
# PNG bytes are left out on purpose: they also depend on the zlib build. If a generator change
# is intended, bump its GENERATOR_VERSION and record the new digest printed by the failing test.
COCO_DIGEST = '29bf7c0b921c8a8ff954a7728bb714781b4081f591321e6100913dccf71718d2'
CLS_DIGEST = 'b3c36af4c09d238cb365a98aa8fa8a0f829c425b7ca057ce284cadcdb2973d66'


def _files(root: Path) -> dict[str, str]:
    """Map every file under ``root`` (relative path) to the sha256 of its bytes."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _content_digest(root: Path) -> str:
    """Digest of a generated set that does not depend on the PNG encoder."""
    digest = hashlib.sha256()
    for rel in sorted(_files(root)):
        path = osp.join(root, rel)
        digest.update(rel.encode())
        if rel.endswith('.png'):
            img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            digest.update(str(img.shape).encode() + img.tobytes())
        else:
            with open(path, 'rb') as f:
                digest.update(f.read())
    return digest.hexdigest()


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def coco_set(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small hard COCO set shared by the validity tests."""
    root = tmp_path_factory.mktemp('coco_hard')
    return generate_coco_shapes(str(root), num_train=6, num_val=2, img_size=160, seed=3)


# ------------------------------------------------------------------------------------------
# COCO shapes
# ------------------------------------------------------------------------------------------


def test_coco_deterministic_and_known_digest(tmp_path: Path) -> None:
    kwargs = dict(num_train=2, num_val=1, img_size=96, seed=0)
    a = generate_coco_shapes(str(tmp_path / 'a'), **kwargs)
    b = generate_coco_shapes(str(tmp_path / 'b'), **kwargs)
    files_a, files_b = _files(tmp_path / 'a'), _files(tmp_path / 'b')
    assert len(files_a) == 2 + 1 + 2
    assert files_a == files_b
    for split in ('train', 'val'):
        assert a['splits'][split]['sha256'] == b['splits'][split]['sha256']
        rel = osp.join('annotations', f'instances_{split}.json')
        assert a['splits'][split]['sha256'] == files_a[rel]
    digest = _content_digest(tmp_path / 'a')
    assert digest == COCO_DIGEST, f'generator output changed: new digest {digest}'
    # A different seed gives different images.
    c = generate_coco_shapes(str(tmp_path / 'c'), **{**kwargs, 'seed': 1})
    assert c['splits']['train']['sha256'] != a['splits']['train']['sha256']


def test_coco_prefix_property(tmp_path: Path) -> None:
    small = generate_coco_shapes(str(tmp_path / 's'), 2, 1, img_size=96, seed=5)
    large = generate_coco_shapes(str(tmp_path / 'l'), 4, 2, img_size=96, seed=5)
    files_s, files_l = _files(tmp_path / 's'), _files(tmp_path / 'l')
    pngs = [rel for rel in files_s if rel.endswith('.png')]
    assert len(pngs) == 3
    assert all(files_s[rel] == files_l[rel] for rel in pngs)
    for split, n in (('train', 2), ('val', 1)):
        coco_s = _load(small['splits'][split]['ann_file'])
        coco_l = _load(large['splits'][split]['ann_file'])
        assert coco_l['images'][:n] == coco_s['images']
        assert [a for a in coco_l['annotations'] if a['image_id'] <= n] == coco_s['annotations']


def _instance_contrast(root: Path) -> np.ndarray:
    """Colour distance between each train instance's mean and a 3-pixel ring around it."""
    from pycocotools import mask as mask_utils

    ann = _load(osp.join(root, 'annotations', 'instances_train.json'))
    images = {i['id']: i for i in ann['images']}
    out = []
    for a in ann['annotations']:
        info = images[a['image_id']]
        img = cv2.imread(osp.join(root, 'train', info['file_name'])).astype(np.float64)
        rles = mask_utils.frPyObjects(a['segmentation'], info['height'], info['width'])
        inside = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        ring = cv2.dilate(inside.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        ring &= ~inside
        if inside.sum() >= 20 and ring.sum() >= 20:
            out.append(np.linalg.norm(img[inside].mean(0) - img[ring].mean(0)))
    return np.array(out)


def test_coco_faint_preset_camouflages_more_shapes(tmp_path: Path) -> None:
    kwargs = dict(num_train=12, num_val=1, img_size=128, seed=2)
    faint = generate_coco_shapes(str(tmp_path / 'f'), difficulty='faint', **kwargs)
    generate_coco_shapes(str(tmp_path / 'g'), difficulty='faint', **kwargs)
    generate_coco_shapes(str(tmp_path / 'm'), difficulty='medium', **kwargs)
    assert _files(tmp_path / 'f') == _files(tmp_path / 'g')
    assert (
        faint['splits']['train']['sha256']
        != _files(tmp_path / 'm')[osp.join('annotations', 'instances_train.json')]
    )
    low_faint = (_instance_contrast(tmp_path / 'f') < 40).mean()
    low_medium = (_instance_contrast(tmp_path / 'm') < 40).mean()
    # measured: 33 % vs 5 % of the instances within 40 colour levels of their surroundings
    assert low_faint > 0.2 and low_faint > 3 * low_medium


def test_coco_skip_force_and_stale(tmp_path: Path) -> None:
    root = str(tmp_path)
    first = generate_coco_shapes(root, 3, 1, img_size=64, seed=0, difficulty='easy')
    assert not first['skipped']
    again = generate_coco_shapes(root, 3, 1, img_size=64, seed=0, difficulty='easy')
    assert again['skipped'] and again['splits'] == first['splits']
    forced = generate_coco_shapes(root, 3, 1, img_size=64, seed=0, difficulty='easy', force=True)
    assert not forced['skipped'] and forced['splits'] == first['splits']
    # Other params regenerate, and images beyond the new count are removed.
    fewer = generate_coco_shapes(root, 1, 1, img_size=64, seed=0, difficulty='easy')
    assert not fewer['skipped']
    assert sorted(os.listdir(tmp_path / 'train')) == ['000000.png']
    assert _load(fewer['splits']['train']['ann_file'])['info']['params']['num_train'] == 1


def test_coco_summary(coco_set: dict) -> None:
    train = coco_set['splits']['train']
    assert coco_set['classes'] == list(CLASSES) and len(CLASSES) >= 6
    assert train['num_images'] == 6 and train['num_annotations'] >= 6 * 3 // 2
    assert sum(train['class_counts'].values()) == train['num_annotations']
    assert 0 < train['instances_per_image']['mean'] <= 12


def test_coco_annotations_valid(coco_set: dict) -> None:
    from pycocotools.coco import COCO

    rings_checked = 0
    for split in ('train', 'val'):
        info = coco_set['splits'][split]
        coco = COCO(info['ann_file'])
        cats = {c['id']: c['name'] for c in coco.dataset['categories']}
        assert sorted(cats) == list(range(1, len(CLASSES) + 1))
        assert [cats[i + 1] for i in range(len(CLASSES))] == list(CLASSES)
        for img_id, img_info in coco.imgs.items():
            img = cv2.imread(osp.join(info['img_dir'], img_info['file_name']))
            assert img.shape == (img_info['height'], img_info['width'], 3)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            union = np.zeros(img.shape[:2], np.int32)
            for ann in anns:
                assert ann['iscrowd'] == 0 and isinstance(ann['segmentation'], list)
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
                mask = coco.annToMask(ann).astype(bool)
                assert mask.any()
                ys, xs = np.nonzero(mask)
                box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert np.allclose(ann['bbox'], box, atol=1)
                assert abs(mask.sum() - ann['area']) <= 0.03 * ann['area']
                union += mask
                if cats[ann['category_id']] == 'ring':
                    _, hierarchy = cv2.findContours(
                        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
                    )
                    has_hole = bool((hierarchy[0][:, 3] != -1).any())
                    assert has_hole == bool(ann['has_hole'])
                    if not ann['occluded'] and not ann['truncated']:
                        x, y, w, h = ann['bbox']
                        assert has_hole and not mask[int(y + h / 2), int(x + w / 2)]
                        rings_checked += 1
            # Visible masks: later shapes were subtracted, so instances never overlap.
            assert union.max() <= 1
    assert rings_checked >= 1


def test_mask_to_polygons_round_trip() -> None:
    import pycocotools.mask as mask_utils

    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.uniform(size=(14, 14)) < rng.uniform(0.2, 0.8)  # holes, diagonals, specks
        polygons = mask_to_polygons(mask)
        decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 14, 14)))
        assert np.array_equal(decoded.astype(bool), mask)
    ring = np.zeros((20, 20), bool)
    yy, xx = np.mgrid[:20, :20]
    ring[((yy - 10) ** 2 + (xx - 10) ** 2 <= 64) & ((yy - 10) ** 2 + (xx - 10) ** 2 > 16)] = True
    polygons = mask_to_polygons(ring)
    assert len(polygons) == 1  # one cut polygon, not an outer and an inner one
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, 20, 20)))
    assert np.array_equal(decoded.astype(bool), ring) and not decoded[10, 10]


def test_coco_mmdet_dataset(coco_set: dict, require_mm) -> None:
    require_mm('mmdet')
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs
    from pycocotools.coco import COCO

    pipeline = [
        LoadImageFromFile(),
        LoadAnnotations(with_bbox=True, with_mask=True),
        PackDetInputs(),
    ]
    dataset = CocoDataset(
        data_root=coco_set['out_dir'],
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        metainfo=dict(classes=CLASSES),
        pipeline=pipeline,
        test_mode=True,
    )
    assert len(dataset) == 6
    assert dataset.metainfo['classes'] == CLASSES
    coco = COCO(coco_set['splits']['train']['ann_file'])
    for idx in (0, 1):
        item = dataset[idx]
        img_id = item['data_samples'].img_id
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        gt = item['data_samples'].gt_instances
        assert tuple(item['inputs'].shape) == (3, 160, 160)
        assert len(gt) == len(anns) > 0
        masks = gt.masks.to_ndarray().astype(bool)
        assert masks.shape == (len(anns), 160, 160)
        for mask, box, label, ann in zip(masks, gt.bboxes.tensor.numpy(), gt.labels.tolist(), anns):
            assert label == ann['category_id'] - 1
            assert np.array_equal(mask, coco.annToMask(ann).astype(bool))
            x, y, w, h = ann['bbox']
            assert np.allclose(box, [x, y, x + w, y + h])


# ------------------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------------------


def test_classification_image_folder(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    a = generate_shapes_classification(str(tmp_path / 'a'), 2, 1, img_size=32, seed=0)
    b = generate_shapes_classification(str(tmp_path / 'b'), 2, 1, img_size=32, seed=0)
    assert _files(tmp_path / 'a') == _files(tmp_path / 'b')
    digest = _content_digest(tmp_path / 'a')
    assert digest == CLS_DIGEST, f'generator output changed: new digest {digest}'
    assert a['num_classes'] == len(CLS_CLASSES) >= 10
    meta = _load(osp.join(tmp_path / 'a', 'meta.json'))
    assert meta['classes'] == list(CLS_CLASSES) and meta['info']['params']['img_size'] == 32
    for split, n in (('train', 2), ('val', 1)):
        folder = ImageFolder(str(tmp_path / 'a' / split))
        assert folder.classes == list(CLS_CLASSES)
        assert len(folder) == n * len(CLS_CLASSES) == a['splits'][split]['num_images']
        img, label = folder[len(folder) - 1]
        assert img.size == (32, 32) and label == len(CLS_CLASSES) - 1
    assert generate_shapes_classification(str(tmp_path / 'a'), 2, 1, img_size=32)['skipped']
    assert not b['skipped']
    # Prefix property: 3 images per class start with the 2 above.
    c = generate_shapes_classification(str(tmp_path / 'c'), 3, 1, img_size=32, seed=0)
    assert not c['skipped']
    files_a, files_c = _files(tmp_path / 'a'), _files(tmp_path / 'c')
    assert all(files_c[rel] == h for rel, h in files_a.items() if rel.endswith('.png'))


def test_classification_faint_preset_is_deterministic_and_fainter(tmp_path: Path) -> None:
    from benchmarks.reference.synthetic.classification import (
        image_rng,
        render_classification_image,
    )

    a = generate_shapes_classification(str(tmp_path / 'a'), 2, 1, img_size=32, difficulty='faint')
    generate_shapes_classification(str(tmp_path / 'b'), 2, 1, img_size=32, difficulty='faint')
    easy = generate_shapes_classification(str(tmp_path / 'e'), 2, 1, img_size=32, difficulty='easy')
    files_a, files_e = _files(tmp_path / 'a'), _files(tmp_path / 'e')
    assert files_a == _files(tmp_path / 'b')
    pngs = [rel for rel in files_a if rel.endswith('.png')]
    assert len(pngs) == 3 * len(CLS_CLASSES) and all(files_a[r] != files_e[r] for r in pngs)
    assert a['params']['difficulty'] == 'faint' and easy['params']['difficulty'] == 'easy'

    # The class texture is faint: over many stripe / checker targets on a plain background the
    # spread of colours inside the image is far smaller than on the easy preset. Measured on
    # the target's own pixels: render the same target twice, textured and solid, and compare.
    def texture_energy(difficulty: str) -> float:
        total = 0.0
        for i in range(40):
            kinds = {}
            for kind in ('stripes', 'solid'):
                rng = image_rng(7, 'train', 0, i)
                kinds[kind] = render_classification_image(rng, 64, 'square', kind, difficulty)
            diff = kinds['stripes'].astype(np.float64) - kinds['solid'].astype(np.float64)
            total += float(np.abs(diff).mean())
        return total / 40

    assert texture_energy('faint') < 0.5 * texture_energy('easy')


def test_classification_easy_preset(tmp_path: Path) -> None:
    a = generate_shapes_classification(str(tmp_path / 'a'), 2, 1, img_size=32, difficulty='easy')
    generate_shapes_classification(str(tmp_path / 'b'), 2, 1, img_size=32, difficulty='easy')
    hard = generate_shapes_classification(str(tmp_path / 'h'), 2, 1, img_size=32)
    files_a, files_h = _files(tmp_path / 'a'), _files(tmp_path / 'h')
    assert files_a == _files(tmp_path / 'b')
    pngs = [rel for rel in files_a if rel.endswith('.png')]
    assert len(pngs) == 3 * len(CLS_CLASSES) and all(files_a[r] != files_h[r] for r in pngs)
    assert a['params']['difficulty'] == 'easy' and 'difficulty' not in hard['params']
    # Changing the preset regenerates instead of reusing the other preset's images.
    again = generate_shapes_classification(
        str(tmp_path / 'h'), 2, 1, img_size=32, difficulty='easy'
    )
    assert not again['skipped'] and _files(tmp_path / 'h') == files_a
    with pytest.raises(ValueError, match="difficulty must be one of .*'medium'"):
        generate_shapes_classification(str(tmp_path / 'm'), 1, 1, difficulty='medium')
    assert not osp.exists(tmp_path / 'm' / 'meta.json')
