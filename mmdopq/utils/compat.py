"""Compatibility of mmengine 0.10.x checkpoint loading with torch >= 2.6.

Why:
    torch 2.6 changed the default of ``torch.load`` to ``weights_only=True``: only tensors and a
    small allowlist of plain Python types may be unpickled. mmengine 0.10.7's
    ``mmengine.runner.checkpoint`` (``load_from_local``, ``load_from_pavi``, ``load_from_ceph``,
    the functions behind ``load_checkpoint``, ``CheckpointLoader.load_checkpoint``,
    ``Runner.load_checkpoint`` / ``resume`` and ``init_cfg=dict(type='Pretrained')``) calls
    ``torch.load(filename, map_location=...)`` without ``weights_only``. Checkpoints written by
    mmengine's own Runner hold more than tensors (numpy scalars and arrays in ``meta``,
    ``HistoryBuffer`` objects in ``message_hub``), so on torch 2.14 they fail to load with an
    ``UnpicklingError``. (URLs are unaffected: they go through ``torch.hub``, whose loader
    already defaults to ``weights_only=False``.)

What:
    :func:`apply_checkpoint_compat` replaces the module-global name ``torch`` *inside*
    ``mmengine.runner.checkpoint`` only, by a thin stand-in module that forwards every
    attribute to the real ``torch`` except ``load``, which calls ``torch.load`` with
    ``weights_only=False`` when the caller did not pass ``weights_only``. Nothing else changes:
    the global ``torch.load`` (and thus every other library and user code) keeps torch's
    ``weights_only=True`` default, and an explicit ``weights_only`` from the caller wins.
    ``import mmdopq`` applies it; applying it again is a no-op.

Security trade-off:
    ``weights_only=False`` unpickles arbitrary objects, so a malicious checkpoint file can run
    code when loaded. This restores exactly what mmengine did with every torch before 2.6, for
    the checkpoints one deliberately passes to mmengine/mmdet/mmdopq (``load_from``,
    ``--checkpoint``, ``init_cfg``): only load checkpoints from sources you trust. To refuse
    pickles anyway, set ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``: torch then forces
    ``weights_only=True`` even when ``weights_only=False`` is passed (mmengine-saved
    checkpoints with non-tensor metadata will then fail to load).
"""

import sys
import types
from typing import Any

# torch and mmengine are imported inside the functions: importing this module stays free of
# heavy dependencies (``mmdopq/__init__.py`` runs the version checks before applying the patch).

_PATCHED_MODULE = 'mmengine.runner.checkpoint'


def _load_trusted_checkpoint(f: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.load`` that defaults to ``weights_only=False`` (mmengine's pre-torch-2.6 behaviour).

    Args:
        f: File name or file-like object, as for :func:`torch.load`.
        *args: Positional arguments of :func:`torch.load` (``map_location``, ...).
        **kwargs: Keyword arguments of :func:`torch.load`; an explicit ``weights_only`` is kept.

    Returns:
        Any: The unpickled object.
    """
    import torch

    kwargs.setdefault('weights_only', False)
    return torch.load(f, *args, **kwargs)


class _CheckpointTorch(types.ModuleType):
    """Stand-in for ``torch`` in one module's globals: the real torch, with another ``load``."""

    load = staticmethod(_load_trusted_checkpoint)

    def __init__(self, torch_module: types.ModuleType) -> None:
        super().__init__(torch_module.__name__, torch_module.__doc__)
        self.__dict__['_torch'] = torch_module

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not found on the stand-in itself, i.e. all but ``load``.
        return getattr(self.__dict__['_torch'], name)

    def __repr__(self) -> str:
        return f'<mmdopq checkpoint-compat view of {self.__dict__["_torch"]!r}>'


def is_checkpoint_compat_applied() -> bool:
    """Return whether :func:`apply_checkpoint_compat` is in effect.

    Returns:
        bool: True if ``mmengine.runner.checkpoint`` uses the compat ``torch.load``.
    """
    module = sys.modules.get(_PATCHED_MODULE)
    return module is not None and isinstance(getattr(module, 'torch', None), _CheckpointTorch)


def apply_checkpoint_compat() -> bool:
    """Make mmengine's checkpoint loading work with torch's ``weights_only=True`` default.

    See the module docstring for the mechanism and the security trade-off. Idempotent.

    Returns:
        bool: True if the patch was applied by this call, False if it already was.

    Raises:
        RuntimeError: If ``mmengine.runner.checkpoint`` no longer refers to ``torch`` through a
            module global (a new mmengine layout that this patch does not understand).
    """
    import torch
    from mmengine.runner import checkpoint as ckpt_module

    current = getattr(ckpt_module, 'torch', None)
    if isinstance(current, _CheckpointTorch):
        return False
    if current is not torch:
        raise RuntimeError(
            f'{_PATCHED_MODULE} does not use a module-global `torch` (found {current!r}); '
            'mmdopq.utils.compat.apply_checkpoint_compat must be updated for this mmengine.'
        )
    ckpt_module.torch = _CheckpointTorch(torch)
    return True


__all__ = ['apply_checkpoint_compat', 'is_checkpoint_compat_applied']
