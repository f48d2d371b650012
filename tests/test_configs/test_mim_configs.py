"""``mmdopq::`` config bases: a user's config outside the repository inherits the shipped configs.

setup.py ships ``configs/`` as ``mmdopq/.mim/configs`` (a symbolic link in the checkout, a copy
in a wheel), where mmengine's ``Config`` looks for ``mmdopq::<path>``, as for ``mmdet::<path>``.
"""

import json
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys
import textwrap

from mmengine.config import Config

import mmdopq

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
QUANT_BASE = '_base_/quant/dopq_w4a4.py'
CALIB_BASE = '_base_/calib/coco_train_calib32.py'
USER_MODEL = dict(type='MaskRCNN', backbone=dict(type='SwinTransformer', depths=[2]))
#: What a non-editable build reads from the checkout (setup.py fails if it needs more).
SOURCE = (
    'setup.py',
    'MANIFEST.in',
    'pyproject.toml',
    'README.md',
    'requirements',
    'mmdopq',
    'configs',
)


def write_user_config(user_dir):
    """A user's model config and the quantized config inheriting mmdopq's bases, as in the
    README: the float model next to it, quant and calibration bases through ``mmdopq::``."""
    os.makedirs(user_dir, exist_ok=True)
    with open(osp.join(user_dir, 'my_model.py'), 'w') as f:
        f.write(f'model = {USER_MODEL!r}\n')
    path = osp.join(user_dir, 'my_config.py')
    with open(path, 'w') as f:
        f.write(
            textwrap.dedent(f"""\
            _base_ = ['./my_model.py', 'mmdopq::{QUANT_BASE}', 'mmdopq::{CALIB_BASE}']
            model = dict(
                _delete_=True,
                type='mmdopq.QuantizedModel',
                architecture=_base_.model,
                quant=_base_.quant,
            )
            """)
        )
    return path


def resolved_base(cfg_text, rel_path):
    """The file a ``mmdopq::<rel_path>`` base was read from: ``Config.text`` starts the text
    of every file it read with that file's path."""
    (line,) = [ln for ln in cfg_text.splitlines() if ln.endswith(rel_path) and osp.isabs(ln)]
    return line


def check_user_config(cfg):
    quant = Config.fromfile(osp.join(REPO, 'configs', QUANT_BASE)).quant
    calib = Config.fromfile(osp.join(REPO, 'configs', CALIB_BASE)).custom_hooks
    assert cfg.model.type == 'mmdopq.QuantizedModel'
    assert cfg.model.quant.to_dict() == quant.to_dict()
    assert cfg.model.architecture.to_dict() == USER_MODEL
    # mmengine marks each typed dict of a ``pkg::`` base with ``_scope_=pkg``: the calibration
    # hook is built in mmdopq's registry scope (the same hook as with a relative base).
    assert [h.to_dict() for h in cfg.custom_hooks] == [
        dict(h.to_dict(), _scope_='mmdopq') for h in calib
    ]


def test_user_config_inherits_mmdopq_bases(tmp_path):
    """In this environment (the checkout, installed editable by ``make install``): the bases
    are read from the importable mmdopq's ``.mim/configs``, which are the checkout's configs."""
    cfg = Config.fromfile(write_user_config(str(tmp_path / 'user')))
    check_user_config(cfg)
    shipped = osp.join(osp.dirname(mmdopq.__file__), '.mim', 'configs')
    for rel_path in (QUANT_BASE, CALIB_BASE):
        path = resolved_base(cfg.text, rel_path)
        assert path == osp.join(shipped, rel_path)
        with open(path) as f, open(osp.join(REPO, 'configs', rel_path)) as g:
            assert f.read() == g.read()


def run(cmd, **kwargs):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert out.returncode == 0, f'{cmd} exited {out.returncode}:\n{out.stdout}\n{out.stderr}'
    return out.stdout


def test_installed_wheel_ships_configs_and_tools(tmp_path):
    """A non-editable install (a wheel: the configs are copied into the package) resolves
    ``mmdopq::`` from the installed copy, with the checkout not importable; the installed
    ``mmdopq-quantize`` and ``python -m mmdopq quantize`` run."""
    src, site, user = tmp_path / 'src', tmp_path / 'site', tmp_path / 'user'
    src.mkdir()
    # A clean copy of the sources: a build in the checkout would reuse (and leave) its build/.
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.mim', '*.egg-info')
    for name in SOURCE:
        path = osp.join(REPO, name)
        if osp.isdir(path):
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', 'install', '-q']
    run([*pip, '--no-deps', '--no-build-isolation', '--target', str(site), str(src)])

    shipped = site / 'mmdopq' / '.mim' / 'configs'
    assert not osp.islink(shipped)

    def files(root):
        return sorted(
            osp.relpath(osp.join(d, f), root)
            for d, dirs, fs in os.walk(root)
            for f in fs
            if '__pycache__' not in d
        )

    assert files(shipped) == files(osp.join(REPO, 'configs'))

    # The user's directory, the installed copy only: not the checkout (nor the dev install).
    env = dict(os.environ, PYTHONPATH=str(site))
    result = tmp_path / 'result.pkl'
    script = textwrap.dedent(f"""\
        import pickle
        import mmdopq
        from mmengine.config import Config
        cfg = Config.fromfile({write_user_config(str(user))!r})
        with open({str(result)!r}, 'wb') as f:
            pickle.dump(dict(mmdopq=mmdopq.__file__, cfg=cfg.to_dict(), text=cfg.text), f)
        """)
    run([sys.executable, '-c', script], cwd=user, env=env)
    with open(result, 'rb') as f:
        out = pickle.load(f)
    assert out['mmdopq'] == str(site / 'mmdopq' / '__init__.py')
    check_user_config(Config(out['cfg']))
    for rel_path in (QUANT_BASE, CALIB_BASE):
        assert resolved_base(out['text'], rel_path) == str(shipped / rel_path)

    # The tools: the console script pip generated, and the module.
    assert 'usage' in run([str(site / 'bin' / 'mmdopq-quantize'), '--help'], cwd=user, env=env)
    help_text = run([sys.executable, '-m', 'mmdopq', 'quantize', '--help'], cwd=user, env=env)
    assert '--cfg-options' in help_text and '--recipe' in help_text

    # The README's "your own model" example, for real: a user's float classifier config and
    # checkpoint in their own directory, quantized through mmdopq:: bases by the installed tool.
    config, ckpt, data = write_user_classifier(tmp_path / 'mine')
    work = tmp_path / 'mine' / 'work'
    run(
        [str(site / 'bin' / 'mmdopq-quantize'), config, ckpt, '--work-dir', str(work)]
        + ['--cfg-options', f'custom_hooks.0.dataloader.dataset.data_root={data}']
        + ['custom_hooks.0.num_images=8'],
        cwd=tmp_path / 'mine',
        env=dict(env, OMP_NUM_THREADS='1'),
    )
    with open(work / 'results.json') as f:
        res = json.load(f)
    assert res['recipe'] == 'dopq' and res['bits'] == 'w4a4'
    assert res['calibration']['num_images'] == 8 and not res['calibration']['from_checkpoint']
    assert 'accuracy/top1' in res['metrics']
    assert res['quant']['reparam_rule'] == 'mad'  # the dopq base's recipe reached the model
    assert osp.isfile(work / 'quantized.pth')


def write_user_classifier(user_dir) -> tuple:
    """A user's own tiny timm ViT (float config + checkpoint + image folders), outside the repo,
    and the quantized config of the README: ``./my_vit.py`` plus two ``mmdopq::`` bases."""
    import torch
    from mmengine.registry import MODELS, DefaultScope

    from benchmarks.reference.synthetic import generate_shapes_classification

    user_dir = str(user_dir)
    data = osp.join(user_dir, 'data')
    meta = generate_shapes_classification(
        data, num_train_per_class=2, num_val_per_class=1, img_size=40, seed=0
    )
    num_classes = len(meta['classes'])
    # the float parts of a shipped ImageNet config, as a user's own model config would hold
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'imagenet', 'dopq_w4a4_deit-small-p16_in1k.py'))
    arch = cfg.model.architecture
    arch.update(
        model_name='vit_tiny_patch16_224',
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=2,
        num_classes=num_classes,
    )
    arch.data_preprocessor.num_classes = num_classes
    cfg.test_dataloader.dataset.update(
        data_root=data,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='ResizeEdge', scale=36, edge='short', backend='pillow'),
            dict(type='CenterCrop', crop_size=32),
            dict(type='PackInputs'),
        ],
    )
    cfg.test_dataloader.update(batch_size=8, num_workers=0)
    float_parts = {k: v for k, v in cfg.to_dict().items() if k not in ('custom_hooks', 'quant')}
    float_cfg = osp.join(user_dir, 'my_vit.py')
    Config(dict(float_parts, model=arch.to_dict())).dump(float_cfg)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(Config.fromfile(float_cfg).model)
    ckpt = osp.join(user_dir, 'my_vit.pth')
    torch.save(model.state_dict(), ckpt)
    config = osp.join(user_dir, 'my_config.py')
    with open(config, 'w') as f:
        f.write(
            textwrap.dedent(f"""\
            _base_ = [
                './my_vit.py',
                'mmdopq::{QUANT_BASE}',
                'mmdopq::_base_/calib/in1k_train_calib32.py',
            ]
            model = dict(
                _delete_=True,
                type='mmdopq.QuantizedModel',
                architecture=_base_.model,
                quant=_base_.quant,
            )
            """)
        )
    return config, ckpt, data
