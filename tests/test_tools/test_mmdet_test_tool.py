"""mmdet's own tools/test.py evaluates an mmdopq config (the hook calibrates)."""

import json
import os.path as osp
import subprocess
import sys

import mmdet


def test_mmdet_tools_test_runs_mmdopq_config(tiny_cfg, float_ckpt, tmp_path):
    script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
    assert osp.isfile(script), script
    out = subprocess.run(
        [sys.executable, script, tiny_cfg('dopq', 4), float_ckpt, '--work-dir', str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert 'mmdopq: stage 3/3 re-calibrate' in log  # calibrated by the hook, not skipped
    assert 'coco/bbox_mAP' in log and 'coco/segm_mAP' in log
    record = json.load(open(tmp_path / 'calib_ids.json'))
    assert not record['skipped'] and record['num_images'] == 2
