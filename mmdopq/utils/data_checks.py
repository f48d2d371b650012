"""Checks of dataset configs before anything is built or written.

Data errors caught here get a message naming the config key and the path,
instead of a bare error from deep inside a dataset class.
"""

from __future__ import annotations

import os
import os.path as osp

from .errors import DataError, MissingFileError


def _join(root, path):
    if not path:
        return root or ''
    return path if osp.isabs(path) or not root else osp.join(root, path)


def check_dataset_cfg(cfg: dict, key: str) -> None:
    """Validate the files a dataset config points to.

    * ``ann_file`` (COCO-style datasets): the file must exist;
    * image-folder datasets (mmpretrain ``CustomDataset``/``ImageNet`` without an
      ``ann_file``): the folder must exist and every class sub-folder must hold
      at least one file.

    Args:
        cfg: The dataset config dict.
        key: Where the config sits, for messages (e.g. ``test_dataloader.dataset``).

    Raises:
        FileNotFoundError: Missing annotation file or image folder.
        ValueError: An empty class folder, or a folder with no class sub-folders.
    """
    root = cfg.get('data_root', '') or ''
    ann = cfg.get('ann_file', '')
    if ann:
        path = _join(root, ann)
        if not osp.isfile(path):
            raise MissingFileError(f'annotation file not found: {path} ({key}.ann_file)')
        prefix = cfg.get('data_prefix') or {}
        img = prefix.get('img', prefix.get('img_path')) if isinstance(prefix, dict) else prefix
        if img and not str(img).startswith(('http://', 'https://', 's3://')):
            folder = _join(root, img)
            if not osp.isdir(folder):
                raise MissingFileError(
                    f'image folder not found: {folder} ({key}.data_root / data_prefix.img)'
                )
        return
    if cfg.get('type') not in ('CustomDataset', 'ImageNet', 'mmpretrain.CustomDataset'):
        return
    prefix = cfg.get('data_prefix', '')
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', prefix.get('img', ''))
    folder = _join(root, prefix)
    if not osp.isdir(folder):
        raise MissingFileError(f'image folder not found: {folder} ({key}.data_root / data_prefix)')
    if not cfg.get('with_label', True):
        return
    classes = sorted(d for d in os.listdir(folder) if osp.isdir(osp.join(folder, d)))
    if not classes:
        raise DataError(
            f'{folder} has no class sub-folders ({key}): expected <folder>/<class>/<image>'
        )
    empty = [
        c
        for c in classes
        if not any(osp.isfile(osp.join(folder, c, f)) for f in os.listdir(osp.join(folder, c)))
    ]
    if empty:
        raise DataError(f'{len(empty)} empty class folders in {folder} ({key}): {empty[:10]}')
