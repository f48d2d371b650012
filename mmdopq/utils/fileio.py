"""Atomic writes: a temp file in the target directory, then a rename.

A crash or an error never leaves a partial ``results.json`` or checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import os.path as osp
import tempfile
from typing import Any, Callable


def write_atomic(path: str, write: Callable[[str], Any]) -> str:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path``; returns ``path``."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + osp.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the result the mode a plain open() would (umask applied)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def to_jsonable(o: Any) -> Any:
    """Plain JSON values: numpy/torch to lists and numbers, non-finite floats to strings."""
    if hasattr(o, 'tolist'):  # numpy scalars/arrays, torch tensors
        o = o.tolist()
    if isinstance(o, dict):
        return {str(k): to_jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set)):
        return [to_jsonable(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)  # 'inf', 'nan': strict JSON has no such numbers
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return str(o)


def write_text_atomic(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, 'w') as f:
            f.write(text)

    return write_atomic(path, write)


def dump_json_atomic(obj: Any, path: str, indent: int = 2) -> str:
    """Write ``obj`` as JSON to ``path`` atomically (numpy/torch values converted)."""
    return write_text_atomic(
        path, json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + '\n'
    )


def json_safe(value):
    """``value`` with config dicts and tuples turned into plain JSON types (for records)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
