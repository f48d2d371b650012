"""Foundation checks: the installed stack, registries, checkpoint compat, version checks."""

import json
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from torch import nn

import mmdopq
from mmdopq.utils.version_check import (
    REQUIREMENTS,
    VersionRequirement,
    check_dependencies,
    check_mmcv_ops,
    check_version,
)


def test_mm_stack_imports_and_versions(require_mm):
    mmcv = require_mm('mmcv')
    ops = require_mm('mmcv.ops')
    mmdet = require_mm('mmdet')
    from packaging.version import Version

    assert Version('2.0.0rc4') <= Version(mmcv.__version__) < Version('2.2.0')
    assert Version(mmdet.__version__) >= Version('3.0.0')
    assert mmdopq.__version__ == '0.1.0'
    # A compiled op on CPU: box 1 overlaps box 0 with IoU 81/119 > 0.5 and is suppressed.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7]))


def test_import_mmdopq_is_light():
    code = (
        'import sys, mmdopq; '
        'heavy = [m for m in ("mmdet", "mmcv", "mmcv.ops", "mmdopq.registry", "timm") '
        'if m in sys.modules]; '
        'print(",".join(heavy))'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == '', f'`import mmdopq` imported {out}'


def test_lazy_public_api(require_mm):
    require_mm('mmdet')
    from mmdopq import QuantizedModel
    from mmdopq.models import QuantizedModel as model_cls

    assert QuantizedModel is model_cls
    with pytest.raises(AttributeError, match='no attribute'):
        mmdopq.DoesNotExist  # noqa: B018


def test_import_mmdopq_without_mmengine():
    # The pure-torch core must stay usable without the OpenMMLab packages.
    code = (
        'import sys; sys.modules["mmengine"] = None; sys.modules["mmcv"] = None; '
        'import mmdopq; from mmdopq.utils import is_checkpoint_compat_applied; '
        'assert not is_checkpoint_compat_applied(); print(mmdopq.__version__)'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == mmdopq.__version__


def test_prefixed_type_builds_from_mmdet_registry(require_mm):
    require_mm('mmdet')
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.registry import DefaultScope

    from mmdopq.registry import MODELS

    name = f'Dummy{uuid.uuid4().hex[:8]}'

    class Dummy(nn.Module):
        def __init__(self, width: int = 2, child=None):
            super().__init__()
            self.linear = nn.Linear(width, width)
            # Nested unprefixed types resolve in the default (host) scope.
            self.child = MODELS.build(child) if child is not None else None

    MODELS.register_module(name=name, module=Dummy, force=True)
    child = dict(type='ChannelMapper', in_channels=[4], out_channels=3, kernel_size=1)
    with DefaultScope.overwrite_default_scope('mmdet'):
        assert DefaultScope.get_current_instance().scope_name == 'mmdet'
        model = MMDET_MODELS.build(dict(type=f'mmdopq.{name}', width=3, child=child))
        from mmdet.models.necks import ChannelMapper

        assert isinstance(model, Dummy)
        assert model.linear.in_features == 3
        assert isinstance(model.child, ChannelMapper)
        # The same name through mmengine's root registry.
        from mmengine.registry import MODELS as ROOT_MODELS

        assert ROOT_MODELS.get(f'mmdopq.{name}') is Dummy
    assert MODELS.scope == 'mmdopq'
    assert MODELS.parent is ROOT_MODELS


def test_register_all_modules_keeps_mmdet_scope(require_mm):
    require_mm('mmdet')
    from mmengine.registry import DefaultScope

    from mmdopq.utils import register_all_modules

    with DefaultScope.overwrite_default_scope('mmdet'):
        register_all_modules(init_default_scope=True)
        assert DefaultScope.get_current_instance().scope_name == 'mmdet'
    for module in (
        'mmdopq.models',
        'mmdopq.engine.hooks',
        'mmdopq.evaluation',
        'mmdet.models',
    ):
        assert module in sys.modules


def _checkpoint_with_pickled_meta(model: nn.Module) -> dict:
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance(f'mmdopq-test-{uuid.uuid4().hex[:8]}')
    hub.update_scalar('train/loss', np.float64(0.25))
    return {
        'state_dict': model.state_dict(),
        'meta': {'np_scalar': np.float64(1.5), 'np_arr': np.arange(3), 'epoch': 1},
        # As mmengine's Runner saves it: HistoryBuffer objects holding numpy data.
        'message_hub': hub.state_dict(),
    }


def test_checkpoint_round_trip_with_numpy_meta(tmp_work_dir):
    from mmengine.runner import CheckpointLoader, load_checkpoint, save_checkpoint

    from mmdopq.utils import is_checkpoint_compat_applied

    assert is_checkpoint_compat_applied()
    torch.manual_seed(0)
    src = nn.Linear(3, 2)
    path = str(tmp_work_dir / 'numpy_meta.pth')
    save_checkpoint(_checkpoint_with_pickled_meta(src), path)

    dst = nn.Linear(3, 2)
    ckpt = load_checkpoint(dst, path, map_location='cpu')
    assert ckpt['meta']['np_scalar'] == 1.5
    assert isinstance(ckpt['meta']['np_scalar'], np.float64)
    np.testing.assert_array_equal(ckpt['meta']['np_arr'], np.arange(3))
    assert ckpt['meta']['epoch'] == 1
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)
    buffers = ckpt['message_hub']['log_scalars']
    assert buffers['train/loss'].current() == 0.25

    ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    np.testing.assert_array_equal(ckpt['meta']['np_arr'], np.arange(3))
    assert ckpt['meta']['np_scalar'] == 1.5


def test_checkpoint_compat_is_scoped_and_idempotent(tmp_work_dir):
    import mmengine.runner.checkpoint as ckpt_module

    from mmdopq.utils import apply_checkpoint_compat

    proxy = ckpt_module.torch
    assert apply_checkpoint_compat() is False
    assert ckpt_module.torch is proxy
    # Everything but ``load`` is the real torch.
    assert proxy.Tensor is torch.Tensor and proxy.nn is torch.nn
    # The global torch.load keeps torch's weights_only=True default: not patched globally.
    assert torch.load is not proxy.load
    path = tmp_work_dir / 'numpy_scalar.pth'
    torch.save({'np_scalar': np.float64(1.5)}, path)
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        torch.load(path)
    # An explicit weights_only from the caller still wins through the compat loader.
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        proxy.load(path, weights_only=True)
    assert proxy.load(path)['np_scalar'] == 1.5


def test_check_version_names_package_version_range_and_fix():
    mmcv_req = VersionRequirement('mmcv', '2.0.0rc4', '2.2.0', required=False)
    for bad in ('2.2.0', '1.7.2', '2.0.0rc3'):
        with pytest.raises(ImportError) as info:
            check_version(mmcv_req, bad)
        message = str(info.value)
        assert f'mmcv=={bad}' in message
        assert 'mmcv>=2.0.0rc4,<2.2.0' in message
        assert 'make install' in message
    for good in ('2.0.0rc4', '2.0.1', '2.1.0'):
        check_version(mmcv_req, good)
    check_version(mmcv_req, None)  # optional and not installed: fine

    with pytest.raises(ImportError, match=r'mmengine>=0\.10\.0,<1\.0.*not installed'):
        check_version(VersionRequirement('mmengine', '0.10.0', '1.0'), None)
    check_version(VersionRequirement('torch', '2.0'), '2.14.1+cu130')
    with pytest.raises(ImportError, match=r'torch==1\.13\.1'):
        check_version(VersionRequirement('torch', '2.0'), '1.13.1')


def test_check_dependencies_with_injected_versions():
    assert {r.package for r in REQUIREMENTS} == {'torch', 'mmengine', 'mmcv'}
    ok = {'torch': '2.14.1', 'mmengine': '0.10.7', 'mmcv': '2.1.0'}
    check_dependencies(ok)
    check_dependencies({**ok, 'mmcv': None, 'mmengine': None})
    with pytest.raises(ImportError, match='torch>=2.0, but torch is not installed'):
        check_dependencies({**ok, 'torch': None})
    with pytest.raises(ImportError, match=r'mmengine==1\.0\.0 is installed'):
        check_dependencies({**ok, 'mmengine': '1.0.0'})
    with pytest.raises(ImportError, match=r'mmcv==2\.2\.0 is installed'):
        check_dependencies({**ok, 'mmcv': '2.2.0'})
    check_dependencies()  # the real environment


def test_check_mmcv_ops_explains_missing_ops(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmcv.ops', None)  # makes `import mmcv.ops` fail
    with pytest.raises(ImportError, match='mmcv-lite') as info:
        check_mmcv_ops()
    assert 'make install' in str(info.value)


def test_registries_are_only_those_mmdopq_registers_into():
    import mmdopq.registry as registry

    assert set(registry.__all__) == {'SCOPE', 'MODELS', 'HOOKS', 'METRICS'}
    for name in ('MODELS', 'HOOKS', 'METRICS'):
        assert getattr(registry, name).scope == 'mmdopq'


def test_library_imports_neither_benchmarks_nor_tools():
    """``mmdopq/`` is the library: benchmarks, demo and tools use it, never the reverse."""
    import ast
    import pathlib

    root = pathlib.Path(mmdopq.__file__).parent
    offenders = []
    for path in sorted(root.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or '']
            else:
                continue
            if any(n.split('.')[0] in ('benchmarks', 'tools') for n in names):
                offenders.append(f'{path.relative_to(root)}:{node.lineno}')
    assert not offenders, offenders


def test_atomic_writes_leave_a_normal_file_and_nothing_on_error(tmp_path):
    import os

    from mmdopq.utils.fileio import dump_json_atomic, write_atomic

    path = tmp_path / 'results.json'
    dump_json_atomic({'a': 1}, str(path))
    assert json.loads(path.read_text()) == {'a': 1}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    def fail(tmp):
        with open(tmp, 'w') as f:
            f.write('partial')
        raise RuntimeError('disk full')

    with pytest.raises(RuntimeError, match='disk full'):
        write_atomic(str(tmp_path / 'other.json'), fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['results.json']
