"""Deterministic dataset files shared by the generators: PNGs, JSON, reuse and stale images.

PNGs are written with fixed settings and JSON with sorted keys, both atomically, so the same
arguments give byte-identical files; a generator writes its annotation / meta file last (its
presence with the same params marks a complete set, see :func:`load_params`).
"""

from __future__ import annotations

import json
import os
import os.path as osp
import re
from typing import Any, Optional

import cv2
import numpy as np

from mmdopq.utils.fileio import write_atomic

SPLITS = ('train', 'val')
_FILE_RE = re.compile(r'^\d{6}\.png$')
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""

    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            f.write(data)

    write_atomic(path, write)


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
