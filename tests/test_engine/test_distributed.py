"""2-process gloo run under torchrun on CPU equals the single-process run."""

import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.test_apis.test_quantize_cli_detection import run
from tests.tiny_models import REPO


@pytest.mark.parametrize('reconstruct', [False, True], ids=['calibrate', 'reconstruct'])
def test_two_ranks_match_single_process(reconstruct, tiny_cfg, float_ckpt, tmp_path):
    quant = {}
    if reconstruct:  # every rank reconstructs on the same images; rank 0's result is broadcast
        quant = dict(reconstruct=dict(iters=6, num_images=2, batch_size=1, eval_every=2))
    cfg = tiny_cfg('dopq', 4, **quant)
    single = run(cfg, float_ckpt, tmp_path / 'single')
    env = dict(os.environ, PYTHON=sys.executable, PORT='29517', OMP_NUM_THREADS='1')
    out = subprocess.run(
        [
            'bash',
            osp.join(REPO, 'tools', 'dist_quantize.sh'),
            cfg,
            float_ckpt,
            '2',
            '--work-dir',
            str(tmp_path / 'dist'),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    dist = json.load(open(tmp_path / 'dist' / 'results.json'))
    cal = dist['calibration']
    assert cal['world_size'] == 2 and len(cal['rank_digests']) == 2
    assert len(set(cal['rank_digests'])) == 1
    # same quantized model as the single-process run, and the same (sharded) evaluation
    assert cal['qparams_digest'] == single['calibration']['qparams_digest']
    assert dist['metrics'] == single['metrics']
    assert cal['calib_ids'] == single['calibration']['calib_ids']
    if reconstruct:
        rec, rec1 = cal['reconstruct'], single['calibration']['reconstruct']
        assert cal['reconstruct_ids'] == single['calibration']['reconstruct_ids']
        assert [u['loss_after'] for u in rec['units'].values()] == [
            u['loss_after'] for u in rec1['units'].values()
        ]
        assert any(u['changed'] for u in rec['units'].values())


def test_dist_script_uses_the_project_interpreter(tmp_path):
    """Without PYTHON set and without the venv active (no torch on PATH), dist_quantize.sh
    still runs the tool with the project's interpreter (make install's .venv)."""
    from tests.conftest import mm_required

    venv_python = osp.join(REPO, '.venv', 'bin', 'python')
    if not osp.exists(venv_python):
        message = f'{venv_python} does not exist (the venv make install creates)'
        if mm_required():
            raise AssertionError(message)
        pytest.skip(message)
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'VIRTUAL_ENV')}
    env.update(PATH='/usr/bin:/bin', PORT='29519', OMP_NUM_THREADS='1')
    script = osp.join(REPO, 'tools', 'dist_quantize.sh')
    out = subprocess.run(
        ['bash', script, 'cfg.py', 'ckpt.pth', '1', '--help'],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert '--cfg-options' in out.stdout and '--launcher' in out.stdout
