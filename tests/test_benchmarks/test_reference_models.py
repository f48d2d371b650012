"""The committed reference checkpoints and the demo's code path, end to end on small subsets."""

import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

import mmdopq  # noqa: F401  (checkpoint compat: mmengine's load_checkpoint on torch >= 2.6)
from benchmarks.reference import REFERENCE_MODELS, REPO_ROOT, ensure_data, get_reference_model

RECORDED = osp.join(REPO_ROOT, 'configs', 'reference', 'float_metrics.json')


def recorded() -> dict:
    with open(RECORDED) as f:
        return json.load(f)


def test_every_reference_model_has_a_committed_checkpoint_and_recorded_metrics():
    rec = recorded()
    total = 0
    for name, m in REFERENCE_MODELS.items():
        assert osp.isfile(m.path('checkpoint')), m.checkpoint
        total += osp.getsize(m.path('checkpoint'))
        assert {'val', 'subset'} <= set(rec[name]), name
        assert m.metric_name in rec[name]['val']['metrics']
    assert total < 50 * 2**20, f'reference checkpoints take {total / 2**20:.1f} MB (limit 50)'


@pytest.mark.parametrize('name', sorted(REFERENCE_MODELS))
def test_checkpoint_is_fp16_and_loads_as_fp32(name):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    m = get_reference_model(name)
    ckpt = torch.load(m.path('checkpoint'), map_location='cpu', weights_only=False)
    state = ckpt['state_dict']
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    cfg = Config.fromfile(m.path('float_config'))
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    load_checkpoint(model, m.path('checkpoint'), map_location='cpu', strict=True)
    own = model.state_dict()
    assert all(own[k].dtype == torch.float32 for k, v in state.items() if v.is_floating_point())
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 100)
    assert torch.equal(own[key], state[key].float())


@pytest.mark.parametrize('name', sorted(REFERENCE_MODELS))
def test_checkpoint_reproduces_recorded_float_metrics(name, tmp_path, monkeypatch):
    """Float evaluation through the quantize tool with --recipe float on the recorded val subset."""
    from mmdopq.apis import quantize_cli as quantize

    m = get_reference_model(name)
    sub = recorded()[name]['subset']
    monkeypatch.chdir(tmp_path)  # the configs' data paths are relative
    ensure_data(m.path('float_config'), num_train=sub['num_train'], num_val=sub['num_val'])
    res = quantize.run(
        [m.path('quant_config'), m.path('checkpoint'), '--recipe', 'float']
        + ['--work-dir', str(tmp_path / 'wd')]
    )
    assert res['test_images'] == sub['test_images']
    for key, value in sub['metrics'].items():
        assert res['metrics'][key] == pytest.approx(value, abs=sub['tolerance']), key
    assert not osp.exists(tmp_path / 'wd' / 'quantized.pth')  # a float run saves nothing


def test_demo_end_to_end_on_a_tiny_subset(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)  # run from tmp_path: the checkout is on the path
    cmd = [sys.executable, '-m', 'benchmarks.demo', '--work-dir', 'demo']
    cmd += ['--data-subset', '3', '3', '--val-images', '3', '--calib-images', '2']
    cmd += ['--recipes', 'float', 'repq', 'dopq', '--bits', 'w4a4', '--threads', '1']
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert '[1/3] mask-rcnn_swin-ref float' in out and 'demo finished' in out
    assert '| dopq | w4a4 |' in out and '| repq | w4a4 |' in out
    demo = tmp_path / 'demo'
    data = json.loads((demo / 'results.json').read_text())
    recs = {(r['recipe'], r['bits']): r for r in data['records']}
    assert set(recs) == {('float', 'float'), ('repq', 'w4a4'), ('dopq', 'w4a4')}
    for r in recs.values():
        assert r['val_images'] == 3 and r['peak_rss_mb'] > 100 and r['eval_s'] > 0
        assert 0.0 <= r['metric'] <= 100.0
    assert recs[('dopq', 'w4a4')]['calib_images'] == 2
    assert data['versions']['mmdet'] and data['machine']['cores']
    # every run keeps the CPU it ran on; all ran here, so the header needs no per-CPU count
    assert {r['cpu'] for r in data['runs']} == {data['machine']['cpu']}
    assert 'run_cpus' not in data
    for png in ('metric_vs_bits.png', 'mosf_scales_mask-rcnn_swin-ref.png'):
        assert (demo / 'plots' / png).stat().st_size > 10000
    assert (demo / 'plots' / 'attention_mask-rcnn_swin-ref_4bit.png').stat().st_size > 10000
    assert (demo / 'mask-rcnn_swin-ref' / 'dopq_w4a4_seed0' / 'quantized.pth').is_file()
    # a second run reuses every finished run
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.count('reusing') == 3
