"""The quantize tool on bad input: clear errors before any work, no silent wrong results,
records that keep a checkpoint's provenance, one run per work dir. Tiny timm ViT on tiny
image folders (see tests/tiny_models.py)."""

import fcntl
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from mmdopq.apis import quantize_cli as quantize
from tests.tiny_models import float_checkpoint, tiny_config

OUTPUTS = ('results.json', 'quantized.pth', 'calib_ids.json')


def written(work) -> list:
    return [name for name in OUTPUTS if osp.exists(osp.join(work, name))]


@pytest.fixture
def data(folder, tmp_path):
    """A private copy of the tiny image folders (tests break images in it)."""
    root = str(tmp_path / 'data')
    shutil.copytree(folder['root'], root)
    return dict(folder, root=root)


@pytest.fixture
def setup(data, tmp_path):
    cfg = tiny_config('vit', 'repq', data, tmp_path)
    return dict(cfg=cfg, ckpt=float_checkpoint(cfg, str(tmp_path / 'float.pth')), data=data)


def val_images(root: str) -> list:
    val = osp.join(root, 'val')
    return sorted(
        osp.join(val, c, f) for c in sorted(os.listdir(val)) for f in os.listdir(osp.join(val, c))
    )


def cli(argv, capsys) -> tuple:
    """``main(argv)``: (exit code, the tool's own stderr lines).

    In one pytest process mmengine's loggers of earlier runs may still write to streams
    pytest has closed; the subprocess test below checks the whole stderr of a real run.
    """
    with pytest.raises(SystemExit) as exc:
        quantize.main(argv)
    err = capsys.readouterr().err.splitlines()
    return exc.value.code, [line for line in err if line.startswith('mmdopq-quantize:')]


# -- silent wrong results ------------------------------------------------------------------
def test_reload_with_another_setting_is_refused_with_the_flags_that_match(setup, tmp_path, capsys):
    first = quantize.run([setup['cfg'], setup['ckpt'], '--work-dir', str(tmp_path / 'a')])
    qckpt = first['quantized_checkpoint']
    work = tmp_path / 'b'
    argv = [setup['cfg'], qckpt, '--work-dir', str(work)]
    code, err = cli([*argv, '--cfg-options', 'model.quant.patch_embed_abits=4'], capsys)
    assert code == 2 and len(err) == 1, err
    assert 'patch_embed_abits: 8 vs 4' in err[0]
    assert '--cfg-options model.quant.patch_embed_abits=8' in err[0]
    code, err = cli([*argv, '--recipe', 'dopq', '--bits', 'w6a6'], capsys)
    assert code == 2 and '--bits w4a4' in err[0] and '--recipe repq' in err[0], err
    assert 'post_softmax' in err[0] and 'model.quant.post_softmax' not in err[0]  # via --recipe
    assert written(work) == []
    # the flags it names do reproduce the run
    again = quantize.run([*argv, '--cfg-options', 'model.quant.patch_embed_abits=8'])
    assert again['metrics'] == first['metrics']


def test_class_subset_in_val_folder_stops_before_calibration(setup, tmp_path, capsys):
    val = osp.join(setup['data']['root'], 'val')
    victim = sorted(os.listdir(val))[-1]
    shutil.rmtree(osp.join(val, victim))
    work = tmp_path / 'w'
    code, err = cli([setup['cfg'], setup['ckpt'], '--work-dir', str(work)], capsys)
    assert code == 2 and len(err) == 1, err
    n = setup['data']['num_classes']
    assert f'has {n - 1} classes' in err[0] and f'head has {n}' in err[0]
    assert written(work) == []
    # with the class list given, mmpretrain refuses the folder: named, before calibration too
    classes = sorted(os.listdir(val)) + [victim]
    code, err = cli(
        [setup['cfg'], setup['ckpt'], '--work-dir', str(work), '--recipe', 'float']
        + ['--cfg-options', f'test_dataloader.dataset.classes={classes}'.replace("'", '')],
        capsys,
    )
    assert code == 2 and 'evaluation dataset (test_dataloader.dataset)' in err[0], err
    assert written(work) == []


# -- errors before work, named --------------------------------------------------------------
def test_empty_val_image_is_named_before_calibration(setup, tmp_path, capsys):
    bad = val_images(setup['data']['root'])[3]
    open(bad, 'wb').close()
    work = tmp_path / 'w'
    code, err = cli([setup['cfg'], setup['ckpt'], '--work-dir', str(work)], capsys)
    assert code == 2 and len(err) == 1, err
    assert bad in err[0] and '0 bytes' in err[0] and 'dataset index' in err[0]
    assert written(work) == []


def test_missing_evaluator_annotation_file_is_named_before_calibration(
    tiny_cfg, float_ckpt, tmp_path, capsys
):
    work = tmp_path / 'w'
    code, err = cli(
        [tiny_cfg(), float_ckpt, '--work-dir', str(work)]
        + ['--cfg-options', f'test_evaluator.ann_file={tmp_path}/none.json'],
        capsys,
    )
    assert code == 2 and 'none.json (test_evaluator.ann_file)' in err[0], err
    assert written(work) == []


def test_missing_coco_image_folder_is_named(tiny_cfg, float_ckpt, tmp_path, capsys):
    work = tmp_path / 'w'
    code, err = cli(
        [tiny_cfg(), float_ckpt, '--work-dir', str(work)]
        + ['--cfg-options', 'test_dataloader.dataset.data_prefix.img=nowhere/'],
        capsys,
    )
    assert code == 2 and 'image folder not found' in err[0] and 'nowhere' in err[0], err
    assert written(work) == []


def test_failed_evaluation_keeps_the_calibration_and_a_rerun_reuses_it(setup, tmp_path, caplog):
    clean = quantize.run([setup['cfg'], setup['ckpt'], '--work-dir', str(tmp_path / 'clean')])
    bad = val_images(setup['data']['root'])[2]
    good = open(bad, 'rb').read()
    with open(bad, 'wb') as f:
        f.write(b'not an image at all')
    work = tmp_path / 'w'
    with open(work.mkdir() or work / 'results.json', 'w') as f:
        f.write('{"stale": true}')  # left by an earlier run in this work dir
    with pytest.raises(RuntimeError, match=rf'{bad} \(dataset index \d+\) could not be loaded'):
        quantize.run([setup['cfg'], setup['ckpt'], '--work-dir', str(work)])
    # the calibration is saved and recorded; nothing claims an evaluation that did not finish
    assert written(work) == ['quantized.pth', 'calib_ids.json']
    with open(bad, 'wb') as f:
        f.write(good)
    rerun = quantize.run([setup['cfg'], setup['ckpt'], '--work-dir', str(work)])
    assert rerun['calibration']['reused_from'] == str(work / 'quantized.pth')
    assert rerun['calibration']['calib_ids'] == clean['calibration']['calib_ids']
    assert rerun['metrics'] == clean['metrics']
    # another seed is another calibration: not reused
    other = quantize.run([setup['cfg'], setup['ckpt'], '--work-dir', str(work), '--seed', '1'])
    assert 'reused_from' not in other['calibration'] and other['seed'] == 1


def test_image_of_another_size_names_the_image(setup, tmp_path):
    images = val_images(setup['data']['root'])
    for path in images:  # the model's input size, so that no resize is needed...
        Image.open(path).convert('RGB').resize((32, 32)).save(path)
    bad = images[1]
    Image.new('RGB', (48, 40)).save(bad)  # ...but for one image
    cfg = tiny_config('vit', 'repq', setup['data'], tmp_path / 'c', resize=False)
    with pytest.raises(RuntimeError, match=rf'evaluation failed on images .*{osp.basename(bad)}'):
        quantize.run([cfg, setup['ckpt'], '--work-dir', str(tmp_path / 'w'), '--recipe', 'float'])


def test_user_errors_are_one_line(setup, tmp_path, capsys, monkeypatch):
    base = [setup['cfg'], setup['ckpt'], '--work-dir', str(tmp_path / 'w')]
    code, err = cli([*base, '--bits', 'w1a1'], capsys)
    assert code == 2 and err[0].startswith('mmdopq-quantize: error: --bits w1a1'), err
    code, err = cli([setup['cfg'], str(tmp_path / 'nope.pth')], capsys)
    assert code == 2 and len(err) == 1 and 'nope.pth' in err[0]
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions: a file in the way instead
        ro.chmod(0o700)
        ro = tmp_path / 'file'
        ro.write_text('')
    code, err = cli([setup['cfg'], setup['ckpt'], '--work-dir', str(ro / 'w')], capsys)
    assert code == 2 and len(err) == 1 and f'work dir {ro}/w is not writable' in err[0], err
    for var in ('RANK', 'WORLD_SIZE'):
        monkeypatch.delenv(var, raising=False)
    code, err = cli([*base, '--launcher', 'pytorch'], capsys)
    assert code == 2 and 'torchrun' in err[0] and 'dist_quantize.sh' in err[0], err
    with pytest.raises(FileNotFoundError):  # --debug: the exception itself
        quantize.main([setup['cfg'], str(tmp_path / 'nope.pth'), '--debug'])
    # a setting the model cannot take, found while the adapter builds it
    code, err = cli([*base, '--cfg-options', 'model.quant.scope=backbone_neck'], capsys)
    assert code == 2 and len(err) == 1 and "scope='backbone_neck' is for detectors" in err[0]
    assert not written(tmp_path / 'w')


def test_user_error_of_the_installed_tool_is_one_line_without_traceback(setup, tmp_path):
    out = subprocess.run(
        [sys.executable, '-m', 'mmdopq', 'quantize', setup['cfg'], setup['ckpt']]
        + ['--work-dir', str(tmp_path / 'w'), '--bits', 'w9a4'],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr
    assert 'Traceback' not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith('mmdopq-quantize: error: --bits w9a4')


# -- records and work dirs -------------------------------------------------------------------
def test_provenance_survives_reloads(setup, tmp_path):
    first = quantize.run(
        [setup['cfg'], setup['ckpt'], '--work-dir', str(tmp_path / 'a'), '--seed', '1']
    )
    assert first['seed'] == 1 and first['provenance']['source_sha256']
    ckpt = first['quantized_checkpoint']
    for hop in ('b', 'c'):  # reload the reloaded checkpoint too
        res = quantize.run([setup['cfg'], ckpt, '--work-dir', str(tmp_path / hop)])
        assert res['seed'] == 1 and res['quant']['seed'] == 1
        assert res['calibration']['from_checkpoint']
        for key in ('calib_ids', 'seed', 'qparams_digest', 'num_images'):
            assert res['calibration'][key] == first['calibration'][key], key
        assert res['provenance'] == first['provenance']
        assert res['metrics'] == first['metrics']
        ckpt = res['quantized_checkpoint']
        with open(tmp_path / hop / 'results.json') as f:
            assert json.load(f)['calibration']['calib_ids'] == first['calibration']['calib_ids']


def test_second_run_on_a_busy_work_dir_is_refused(setup, tmp_path, capsys):
    work = tmp_path / 'w'
    work.mkdir()
    with open(work / '.mmdopq.lock', 'a+') as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write('pid 12345')
        holder.flush()
        code, err = cli([setup['cfg'], setup['ckpt'], '--work-dir', str(work)], capsys)
    assert code == 2 and len(err) == 1 and 'in use by another mmdopq run (pid 12345)' in err[0]
    assert written(work) == []
    quantize.run([setup['cfg'], setup['ckpt'], '--work-dir', str(work)])  # free again
