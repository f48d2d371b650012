"""Recipe sweep helpers: commands, summaries, tables, plots (no model runs here)."""

import json
import math
import os.path as osp
import re

import pytest

from benchmarks import bench_recipes
from benchmarks.reference import REFERENCE_MODELS, get_reference_model
from benchmarks.sweep import (
    RunSpec,
    build_specs,
    compare_recipes,
    compare_reconstruction,
    merge_earlier,
    percent,
    plot_metric_vs_bits,
    plot_mosf_scales,
    render_markdown,
    summarize,
    write_results,
)

MODEL = get_reference_model('mask-rcnn_swin-ref')


def _run(recipe, bits, seed, box, mask, calib_s=10.0, eval_s=20.0, rss=1000.0):
    return dict(
        model=MODEL.name,
        recipe=recipe,
        bits=bits,
        seed=seed,
        metric_name=MODEL.metric_name,
        metric=box,
        metrics={'coco/bbox_mAP': box, 'coco/segm_mAP': mask},
        calib_s=0.0 if recipe == 'float' else calib_s,
        eval_s=eval_s,
        peak_rss_mb=rss,
        calib_images=0 if recipe == 'float' else 32,
        quant=dict(reparam_rule='mad'),
        mosf={},
    )


def test_unknown_reference_model_and_variant_are_named():
    with pytest.raises(KeyError, match='nope.*mask-rcnn_swin-ref'):
        get_reference_model('nope')
    with pytest.raises(ValueError, match="unknown recipes \\['bogus'\\]"):
        build_specs([MODEL], ['bogus'], ['w4a4'], [0], '/tmp/x')


def test_seeds_per_bit_width(tmp_path):
    specs = build_specs(
        [MODEL], ['repq'], ['w4a4', 'w6a6'], {'w4a4': [0, 1], 'w6a6': [2]}, str(tmp_path)
    )
    assert [s.label for s in specs] == [
        f'{MODEL.name} float',
        f'{MODEL.name} repq w4a4 seed 0',
        f'{MODEL.name} repq w4a4 seed 1',
        f'{MODEL.name} repq w6a6 seed 2',
    ]
    assert specs[0].command('python')[specs[0].command('python').index('--seed') + 1] == '0'
    later = build_specs([MODEL], ['repq'], ['w4a4'], [3, 4], str(tmp_path))
    assert later[0].command('python') == specs[0].command('python')  # one shared float run
    with pytest.raises(ValueError, match="no calibration seeds for bits \\['w6a6'\\]"):
        build_specs([MODEL], ['repq'], ['w4a4', 'w6a6'], {'w4a4': [0]}, str(tmp_path))


def test_bench_recipes_parses_seeds_per_bit_width(capsys):
    args = bench_recipes.parse_args(['--bits', 'w4a4', 'w6a6', '--seeds', '0', '1', 'w6a6=2,3'])
    assert args.seeds == {'w4a4': [0, 1], 'w6a6': [2, 3]}
    assert bench_recipes.parse_args([]).seeds == dict.fromkeys(['w3a3', 'w4a4', 'w6a6'], [0, 1, 2])
    for bad, msg in [
        (['--bits', 'w4a4', '--seeds', 'w3a3=0'], "'w3a3' is not among --bits"),
        (['--bits', 'w4a4', '--seeds', 'x'], 'expected S or BITS=S'),
        (['--bits', 'w4a4', 'w6a6', '--seeds', 'w6a6=1'], "no seeds for \\['w4a4'\\]"),
    ]:
        with pytest.raises(SystemExit):
            bench_recipes.parse_args(bad)
        assert re.search(msg, capsys.readouterr().err), bad


def test_commands(tmp_path):
    specs = build_specs([MODEL], ['float', 'repq', 'dopq-median'], ['w4a4'], [0, 1], str(tmp_path))
    assert [s.label for s in specs] == [
        f'{MODEL.name} float',
        f'{MODEL.name} repq w4a4 seed 0',
        f'{MODEL.name} repq w4a4 seed 1',
        f'{MODEL.name} dopq-median w4a4 seed 0',
        f'{MODEL.name} dopq-median w4a4 seed 1',
    ]
    float_cmd = specs[0].command('python')
    assert '--bits' not in float_cmd and float_cmd[float_cmd.index('--recipe') + 1] == 'float'
    cmd = specs[-1].command('python')
    assert cmd[cmd.index('--recipe') + 1] == 'dopq'
    assert cmd[cmd.index('--bits') + 1] == 'w4a4' and cmd[cmd.index('--seed') + 1] == '1'
    assert cmd[-1] == 'model.quant.reparam_rule=median' and '--no-save' in cmd
    assert len({s.work_dir for s in specs}) == len(specs)
    with pytest.raises(ValueError, match='unknown variant'):
        RunSpec(MODEL, 'x', 'w4a4', 0, str(tmp_path)).command()


def test_runs_with_other_options_get_their_own_directories(tmp_path):
    """A val-subset sweep must not reuse (or overwrite) the whole-split runs of the same model."""
    whole = build_specs([MODEL], ['float', 'repq'], ['w4a4'], [0], str(tmp_path))
    sub = {MODEL.name: ['test_dataloader.dataset.indices=200']}
    subset = build_specs([MODEL], ['float', 'repq'], ['w4a4'], [0], str(tmp_path), sub)
    tune = {
        MODEL.name: ['test_dataloader.dataset.data_root=x/', 'test_dataloader.dataset.indices=200']
    }
    tuned = build_specs([MODEL], ['float', 'repq'], ['w4a4'], [0], str(tmp_path), tune)
    dirs = [{s.work_dir for s in specs} for specs in (whole, subset, tuned)]
    assert all(len(d) == 2 for d in dirs)
    assert not (dirs[0] & dirs[1] or dirs[0] & dirs[2] or dirs[1] & dirs[2])
    assert whole[1].work_dir == str(tmp_path / MODEL.name / 'repq_w4a4_seed0')
    assert subset[1].command('python')[-1] == 'test_dataloader.dataset.indices=200'
    # the digest names the options, not their order
    again = build_specs(
        [MODEL], ['repq'], ['w4a4'], [0], str(tmp_path), {MODEL.name: tune[MODEL.name][::-1]}
    )
    assert again[1].work_dir == tuned[1].work_dir
    # the demo keeps one option set per work dir and the flat layout
    flat = build_specs([MODEL], ['repq'], ['w4a4'], [0], str(tmp_path), sub, options_subdir=False)
    assert flat[1].work_dir == whole[1].work_dir


def test_percent():
    assert percent('coco/bbox_mAP', 0.4123) == pytest.approx(41.23)
    assert percent('accuracy/top1', 81.5) == 81.5


def test_summarize_mean_spread_and_ratios():
    runs = [
        _run('float', 'float', 0, 50.0, 45.0, eval_s=20.0),
        _run('repq', 'w4a4', 0, 40.0, 36.0, calib_s=12.0, eval_s=24.0),
        _run('repq', 'w4a4', 1, 42.0, 38.0, calib_s=14.0, eval_s=26.0, rss=1200.0),
        _run('dopq', 'w4a4', 0, 45.0, 41.0),
    ]
    recs = summarize(runs, {MODEL.name: 100})
    assert [(r['recipe'], r['bits']) for r in recs] == [
        ('float', 'float'),
        ('repq', 'w4a4'),
        ('dopq', 'w4a4'),
    ]
    repq = recs[1]
    assert repq['metric'] == pytest.approx(41.0)
    assert repq['metric_std'] == pytest.approx(math.sqrt(2.0))
    assert (repq['metric_min'], repq['metric_max']) == (40.0, 42.0)
    assert repq['float_metric'] == 50.0 and repq['drop'] == pytest.approx(-9.0)
    assert repq['metrics']['coco/segm_mAP'] == pytest.approx(37.0)
    assert repq['eval_vs_float'] == pytest.approx(25.0 / 20.0)
    # one float pass over 32 calibration images: 32 x (20 s / 100 images) = 6.4 s
    assert repq['calib_vs_float_pass'] == pytest.approx(13.0 / 6.4)
    assert repq['peak_rss_mb'] == 1200.0 and repq['seeds'] == [0, 1]
    assert recs[2]['metric_std'] == 0.0
    required = {'model', 'recipe', 'bits', 'metric_name', 'metric', 'float_metric'}
    required |= {'calib_s', 'eval_s', 'float_eval_s', 'peak_rss_mb'}
    assert all(required <= set(r) for r in recs)
    with pytest.raises(ValueError, match='no float run'):
        summarize(runs[1:])


def test_compare_recipes_calls_a_difference_real_only_beyond_the_spread():
    runs = [_run('float', 'float', 0, 50.0, 45.0)]
    runs += [_run('repq', 'w4a4', s, v, 0.0) for s, v in enumerate((40.0, 41.0, 42.0))]
    runs += [_run('dopq', 'w4a4', s, v, 0.0) for s, v in enumerate((44.0, 45.0, 46.0))]
    runs += [_run('repq', 'w3a3', s, v, 0.0) for s, v in enumerate((30.0, 34.0, 38.0))]
    runs += [_run('dopq', 'w3a3', s, v, 0.0) for s, v in enumerate((31.0, 35.0, 39.0))]
    runs += [_run('repq', 'w6a6', 0, 49.0, 0.0), _run('dopq', 'w6a6', 0, 48.0, 0.0)]
    comps = {c['bits']: c for c in compare_recipes(summarize(runs))}
    assert set(comps) == {'w3a3', 'w4a4', 'w6a6'}
    w4 = comps['w4a4']
    assert w4['diff'] == pytest.approx(4.0) and w4['spread'] == pytest.approx(math.sqrt(2.0))
    assert w4['verdict'] == 'real' and w4['seeds'] == 3
    assert comps['w3a3']['diff'] == pytest.approx(1.0)
    assert comps['w3a3']['verdict'] == 'within spread'  # spread sqrt(32)
    assert comps['w6a6']['verdict'] == 'one seed' and comps['w6a6']['spread'] is None


def test_reconstruction_rows_beside_calibration_only(tmp_path):
    """``*-recon`` rows are set against their calibration-only rows, with their time."""
    runs = [_run('float', 'float', 0, 50.0, 45.0, eval_s=20.0)]
    for recipe, base in (('repq', 40.0), ('dopq', 41.0)):
        runs += [_run(recipe, 'w4a4', s, base + s, 0.0) for s in (0, 1)]
        runs += [
            dict(_run(f'{recipe}-recon', 'w4a4', s, base + 6.0 + s, 0.0), recon_s=30.0 + s)
            for s in (0, 1)
        ]
    recs = summarize(runs)
    dopq_recon = next(r for r in recs if r['recipe'] == 'dopq-recon')
    assert dopq_recon['recon_s'] == pytest.approx(30.5)
    assert dopq_recon['recon_vs_float_eval'] == pytest.approx(30.5 / 20.0)
    assert next(r for r in recs if r['recipe'] == 'dopq')['recon_s'] is None
    rows = {r['recipe']: r for r in compare_reconstruction(recs)}
    assert set(rows) == {'repq', 'dopq'}
    d = rows['dopq']
    assert (d['calib_only'], d['recon']) == (pytest.approx(41.5), pytest.approx(47.5))
    # float 50: the loss 8.5 of calibration only, 6.0 of it won back
    assert d['gain'] == pytest.approx(6.0) and d['recovered'] == pytest.approx(6.0 / 8.5)
    assert d['to_float'] == pytest.approx(-2.5) and d['seeds'] == 2
    header = dict(machine=dict(cpu='x', cores=2, system='Linux'), versions=dict(torch='2'))
    json_path, md_path = write_results(recs, runs, str(tmp_path), header, 'T')
    data = json.load(open(json_path))
    assert len(data['reconstruction']) == 2
    assert [(c['a'], c['b']) for c in data['comparisons']] == [
        ('dopq', 'repq'),
        ('dopq-recon', 'repq-recon'),
    ]
    md = open(md_path).read()
    assert '## Block reconstruction against calibration only' in md
    assert '| mask-rcnn_swin-ref | w4a4 | dopq | 50.00 | 41.50 +- 0.71 | 47.50 +- 0.71 |' in md
    assert '| +6.00 | 71 % | -2.50 | 30.5 | 20.0 | 2 |' in md
    assert '| dopq-recon | w4a4 |' in md and 'recon / float eval' in md


def test_write_results_and_plots(tmp_path):
    runs = [
        _run('float', 'float', 0, 50.0, 45.0),
        *[
            _run(r, b, s, 40.0 + s, 35.0)
            for r in ('repq', 'dopq')
            for b in ('w4a4', 'w6a6')
            for s in (0, 1)
        ],
    ]
    recs = summarize(runs, {MODEL.name: 10})
    header = dict(machine=dict(cpu='x', cores=2, system='Linux'), versions=dict(torch='2'))
    json_path, md_path = write_results(recs, runs, str(tmp_path), header, 'T')
    data = json.load(open(json_path))
    assert data['machine']['cores'] == 2 and len(data['records']) == 5 and len(data['runs']) == 9
    assert [c['verdict'] for c in data['comparisons']] == ['within spread', 'within spread']
    md = open(md_path).read()
    assert '## DopQ vs the RepQ-ViT recipe' in md
    row = '| mask-rcnn_swin-ref | w4a4 | dopq vs repq | 40.50 | 40.50 | +0.00 | 1.00 | 2 |'
    assert row + ' within spread |' in md
    assert 'recon s' not in md and 'Block reconstruction' not in md  # no reconstructed runs
    assert '| repq | w4a4 | 40.50 +- 0.71 |' in md
    assert '## mask-rcnn_swin-ref (10 images evaluated)' in md
    assert render_markdown(recs, header, 'T').startswith('# T')
    assert 'torch threads' not in md  # no thread counts recorded: nothing to warn about
    # runs reused across thread counts are flagged: their times do not compare
    mixed = [dict(r, threads=2 if r['recipe'] == 'float' else 1) for r in runs]
    assert 'used 1 and 2 torch threads' in render_markdown(summarize(mixed), header, 'T')
    same = [dict(r, threads=1) for r in runs]
    assert 'torch threads' not in render_markdown(summarize(same), header, 'T')
    # the legend names the recipes of the table only
    assert '`repq` = RepQ-ViT recipe' in md and '`tanq_only`' not in md
    png = plot_metric_vs_bits(recs, str(tmp_path / 'p' / 'bits.png'))
    assert osp.getsize(png) > 10000
    mosf = {
        f'backbone.stages.{i}.norm1': dict(
            scale=0.1 * (i + 1),
            k=4.0 if i else 'inf',
            n_capped=3 if i else 0,
            channel_scale_mean=0.12 * (i + 1),
            channel_scale_median=0.08 * (i + 1),
        )
        for i in range(4)
    }
    png = plot_mosf_scales(mosf, str(tmp_path / 'mosf.png'), 'mosf')
    assert osp.getsize(png) > 10000
    with pytest.raises(ValueError, match='no LayerNorm'):
        plot_mosf_scales({'a': dict(scale=1.0)}, str(tmp_path / 'bad.png'))
    assert not osp.exists(tmp_path / 'bad.png')


def test_merge_keeps_other_models_rows_with_their_own_provenance(tmp_path):
    other = get_reference_model('vit-ref')

    def vit(recipe, seed, top1):
        return dict(
            _run(recipe, 'w4a4' if recipe != 'float' else 'float', seed, top1, top1),
            model=other.name,
            metric_name=other.metric_name,
            metrics={other.metric_name: top1},
        )

    def header(date, command, cpu):
        return dict(
            title='T', date=date, command=command, threads=1,
            machine=dict(cpu=cpu, cores=2, system='Linux'), versions=dict(torch='2'),
        )  # fmt: skip

    first_runs = [_run('float', 'float', 0, 50.0, 45.0), _run('repq', 'w4a4', 0, 40.0, 35.0)]
    first_runs += [vit('float', 0, 80.0), vit('repq', 0, 70.0)]
    write_results(summarize(first_runs), first_runs, str(tmp_path), header('d1', 'c1', 'A'), 'T')
    path = str(tmp_path / 'results.json')
    # re-run the Mask R-CNN only: the ViT rows and their provenance survive, in place
    new_runs = [_run('float', 'float', 0, 51.0, 46.0), _run('repq', 'w4a4', 0, 44.0, 39.0)]
    recs, runs, head = merge_earlier(summarize(new_runs), new_runs, header('d2', 'c2', 'B'), path)
    assert [(r['model'], r['metric']) for r in recs] == [
        (MODEL.name, 51.0), (MODEL.name, 44.0), (other.name, 80.0), (other.name, 70.0)
    ]  # fmt: skip
    assert sorted(r['metric'] for r in runs) == [44.0, 51.0, 70.0, 80.0]
    assert head['date'] == 'd2' and head['earlier'] == [
        dict(models=[other.name], date='d1', command='c1', threads=1,
             machine=dict(cpu='A', cores=2, system='Linux'), versions=dict(torch='2'))
    ]  # fmt: skip
    write_results(recs, runs, str(tmp_path), head, 'T')
    md = open(tmp_path / 'results.md').read()
    assert f'- rows of {other.name}: kept from an earlier sweep (d1, `c1`, 1 thread(s), A)' in md
    # a second merge keeps the ViT's original provenance, not the intermediate file's
    again = [_run('float', 'float', 0, 52.0, 47.0)]
    _, _, head3 = merge_earlier(summarize(again), again, header('d3', 'c3', 'C'), path)
    assert [(e['models'], e['date']) for e in head3['earlier']] == [([other.name], 'd1')]
    # re-running every model leaves nothing earlier
    recs4, _, head4 = merge_earlier(
        summarize(first_runs), first_runs, header('d4', 'c4', 'D'), path
    )
    assert head4['earlier'] == [] and len(recs4) == 4
    # results of another title (the tuning split) or not a sweep file are refused by name
    with pytest.raises(ValueError, match="results.json: made for 'T'"):
        merge_earlier(recs, runs, dict(header('d', 'c', 'X'), title='tune'), path)
    bad = tmp_path / 'bad.json'
    bad.write_text('[1, 2]')
    with pytest.raises(ValueError, match='bad.json: not a recipe-sweep'):
        merge_earlier(recs, runs, header('d', 'c', 'X'), str(bad))


def test_reference_registry_paths():
    for m in REFERENCE_MODELS.values():
        assert osp.isfile(m.path('float_config')) and osp.isfile(m.path('quant_config'))
        assert m.metric_name == m.metric_names[0]


def test_tune_split_is_held_out_from_val(tmp_path):
    from benchmarks.reference import ensure_data, ensure_tune_split

    cfg = MODEL.path('float_config')
    summary, opts = ensure_tune_split(cfg, root=str(tmp_path), num_val=2)
    reported = ensure_data(cfg, root=str(tmp_path), num_train=0, num_val=2)
    assert summary['params']['seed'] == 1000 and summary['splits']['train']['num_images'] == 0
    assert opts == [
        'test_dataloader.dataset.data_root=data/reference_coco_tune/',
        'test_evaluator.ann_file=data/reference_coco_tune/annotations/instances_val.json',
    ]
    # different images from the reported val split
    assert summary['splits']['val']['sha256'] != reported['splits']['val']['sha256']
    cls = get_reference_model_config('vit-ref-p8_synthetic-cls.py')
    _, cls_opts = ensure_tune_split(cls, root=str(tmp_path), num_val=1)
    assert cls_opts == ['test_dataloader.dataset.data_root=data/reference_cls_tune/']
    assert sorted(p.name for p in (tmp_path / 'data/reference_cls_tune/val').iterdir())


def get_reference_model_config(name):
    return osp.join(osp.dirname(MODEL.path('float_config')), name)


def _finished_run(spec, box_ap):
    """The ``results.json`` and ``run.json`` contents of a finished run of ``spec`` (1 thread)."""
    from mmdopq.utils.fileio import file_sha256

    res = dict(metrics={'coco/bbox_mAP': box_ap, 'coco/segm_mAP': 0.2}, calib_s=1.0, eval_s=2.0)
    info = dict(command=spec.command()[1:], checkpoint_sha256=file_sha256(spec.checkpoint))
    info.update(wall_s=3.0, peak_rss_mb=500.0, threads=1)
    return res, info


def test_finished_runs_are_reused_only_for_the_same_checkpoint_and_threads(tmp_path):
    from benchmarks.sweep import run_quantize
    from mmdopq.utils.fileio import file_sha256

    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'weights v1')
    spec = RunSpec(MODEL, 'repq', 'w4a4', 0, str(tmp_path / 'run'), checkpoint=str(ckpt))
    (tmp_path / 'run').mkdir()
    res, info = _finished_run(spec, box_ap=0.25)
    (tmp_path / 'run' / 'results.json').write_text(json.dumps(res))
    (tmp_path / 'run' / 'run.json').write_text(json.dumps(info))
    seen = []
    rec = run_quantize(spec, threads=1, echo=seen.append)
    assert 'reusing' in seen[0] and rec['metric'] == 25.0
    assert rec['checkpoint_sha256'] == file_sha256(str(ckpt)) and rec['threads'] == 1
    # another thread count: redone, so the times of one table come from like runs
    seen.clear()
    with pytest.raises(RuntimeError, match='tools/quantize.py exited'):
        run_quantize(spec, threads=2, echo=seen.append, poll_s=1e9)
    assert not any('reusing' in m for m in seen)
    assert json.loads((tmp_path / 'run' / 'run.json').read_text()) == info  # kept on failure
    # same command, retrained weights at the same path: the run is redone, not reused (here
    # it fails fast, as the file is not a checkpoint)
    ckpt.write_bytes(b'weights v2')
    seen.clear()
    with pytest.raises(RuntimeError, match='tools/quantize.py exited'):
        run_quantize(spec, threads=1, echo=seen.append, poll_s=1e9)
    assert not any('reusing' in m for m in seen)


def test_runs_recorded_by_an_earlier_sweep_are_taken_only_when_they_match(tmp_path):
    from benchmarks.sweep import load_recorded_runs, run_quantize, run_record
    from benchmarks.sweep.runner import run_cpus

    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'weights v1')
    # an earlier sweep ran the same command; its work dir is gone, its results.json is kept
    spec = RunSpec(MODEL, 'repq', 'w4a4', 1, str(tmp_path / 'run'), checkpoint=str(ckpt))
    gone = tmp_path / 'gone'
    gone.mkdir()
    res, info = _finished_run(spec, box_ap=0.25)
    (gone / 'results.json').write_text(json.dumps(res))
    # written as a sweep writes it: the per-run records lose their MOSF scales and versions
    record = run_record(spec, info, str(gone / 'results.json'))
    assert record['cpu'] is None  # made before runs kept their CPU
    header = dict(versions={'torch': '9.9'}, machine=dict(cpu='Intel X', cores=2))
    earlier, _ = write_results([], [record], str(tmp_path / 'earlier'), header, 'T')
    recorded = load_recorded_runs([str(earlier)])
    seen = []
    rec = run_quantize(spec, threads=1, echo=seen.append, recorded=recorded)
    assert 'taken from' in seen[0] and rec['metric'] == 25.0 and rec['seed'] == 1
    assert rec['recorded_in'] == str(earlier) and rec['versions'] == {'torch': '9.9'}
    assert rec['mosf'] == {}  # the plots skip it instead of failing on a missing key
    assert rec['cpu'] == 'Intel X'  # from the earlier file's header
    assert not (tmp_path / 'run' / 'results.json').exists()  # nothing was run
    # a sweep with another --work-dir ran the same command there: taken as well
    other = RunSpec(MODEL, 'repq', 'w4a4', 1, str(tmp_path / 'other'), checkpoint=str(ckpt))
    assert other.command() != spec.command()
    seen.clear()
    rec = run_quantize(other, threads=1, echo=seen.append, recorded=recorded)
    assert 'taken from' in seen[0] and rec['metric'] == 25.0
    assert not (tmp_path / 'other' / 'results.json').exists()
    # another thread count, or other weights at the same path: run again (fails fast here)
    for threads, weights in ((2, b'weights v1'), (1, b'weights v2')):
        ckpt.write_bytes(weights)
        seen.clear()
        with pytest.raises(RuntimeError, match='tools/quantize.py exited'):
            run_quantize(spec, threads=threads, echo=seen.append, poll_s=1e9, recorded=recorded)
        assert not any('taken from' in m for m in seen)
    # this sweep runs on another CPU: the header counts the runs by the CPU they ran on
    float_run = dict(_run('float', 'float', 0, 50.0, 45.0), cpu='AMD Y')
    cpus = run_cpus([float_run, rec, dict(rec, cpu=None)])
    assert cpus == {'AMD Y': 1, 'Intel X': 1, 'not recorded': 1}
    header = dict(runs_from=[str(earlier)], run_cpus=cpus, machine=dict(cpu='AMD Y', cores=2))
    md = render_markdown(summarize([float_run, rec]), header, 'T')
    assert f'taken from `{earlier}`' in md
    assert '- runs by CPU (`cpu` of each run in results.json): AMD Y: 1, Intel X: 1,' in md
    (tmp_path / 'bad.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match='bad.json: not a recipe-sweep results.json'):
        load_recorded_runs([str(tmp_path / 'bad.json')])


def test_a_run_in_progress_in_another_sweep_is_awaited_then_reused(tmp_path):
    import fcntl
    import threading

    from benchmarks.sweep import run_quantize

    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'weights')
    run = tmp_path / 'run'
    run.mkdir()
    spec = RunSpec(MODEL, 'repq', 'w4a4', 0, str(run), checkpoint=str(ckpt))
    res, info = _finished_run(spec, box_ap=0.3)
    # "another sweep" holds the run's lock (flock conflicts across open files, even within one
    # process) and finishes the run a moment later
    other = open(run / '.lock', 'a')
    fcntl.flock(other, fcntl.LOCK_EX)

    def finish():
        (run / 'results.json').write_text(json.dumps(res))
        (run / 'run.json').write_text(json.dumps(info))
        fcntl.flock(other, fcntl.LOCK_UN)
        other.close()

    timer = threading.Timer(0.5, finish)
    timer.start()
    seen = []
    try:
        rec = run_quantize(spec, threads=1, echo=seen.append, poll_s=1e9)
    finally:
        timer.join()
    assert 'waiting' in seen[0] and 'reusing' in seen[1]
    assert rec['metric'] == 30.0
    # no one holds it now: taken at once, no waiting message
    seen.clear()
    assert run_quantize(spec, threads=1, echo=seen.append)['metric'] == 30.0
    assert len(seen) == 1 and 'reusing' in seen[0]


def test_progress_line_follows_iteration_and_epoch_based_test_logs(tmp_path):
    from benchmarks.sweep.runner import _progress_line

    log = tmp_path / 'quantize.log'
    assert _progress_line(str(log)) == ''  # not written yet
    log.write_text(
        '12/01 14:18:32 - mmengine - INFO - mmdopq: recipe float: evaluating the float model\n'
        'index created!\n'
        '12/01 14:19:15 - mmengine - INFO - Iter(test) [ 20/200]    eta: 0:06:27\n'
    )
    assert _progress_line(str(log)).startswith('Iter(test) [ 20/200]')
    with log.open('a') as f:
        f.write('12/01 14:19:16 - mmengine - INFO - Epoch(test) [40/200]    eta: 0:06:00\n')
    assert _progress_line(str(log)).startswith('Epoch(test) [40/200]')


def test_every_benchmark_variant_resolves_through_the_tool(tmp_path, monkeypatch):
    from benchmarks.reference import ensure_data
    from benchmarks.sweep.runner import RunSpec
    from benchmarks.sweep.variants import VARIANTS
    from mmdopq.apis import quantize_cli

    model = get_reference_model('mask-rcnn_swin-ref')
    # a few images of the reference data (load_config checks that the data exists)
    ensure_data(model.path('quant_config'), root=str(tmp_path), num_train=2, num_val=1)
    monkeypatch.chdir(tmp_path)  # the configs' data paths are relative
    resolved = {}
    for name in VARIANTS:
        argv = RunSpec(model, name, 'w4a4', 0, 'wd').command()[2:]  # after python, quantize.py
        cfg, recipe = quantize_cli.load_config(quantize_cli.parse_args(argv))
        resolved[name] = (recipe, cfg.custom_hooks[0].num_images)
    assert resolved['float'][0].bits_tag == 'float' and resolved['repq'][0].bits_tag == 'w4a4'
    fine = resolved['tanq_only-fine_grid'][0].tanq_search
    assert len(fine['centres']) == 19 and (fine['centres'][0], fine['centres'][-1]) == (0.05, 0.95)
    assert len(fine['alpha_fractions']) == 21 and fine['refine_steps'] == 9
    for name in ('tanq_only-tensor_obj', 'tanq_only-symmetric', 'tanq_only-fine_grid'):
        recipe = resolved[name][0]
        assert recipe.recipe == 'tanq_only' and recipe.reparam_rule == 'mean'
    assert resolved['tanq_only-tensor_obj'][0].softmax_objective == 'tensor'
    assert resolved['tanq_only-symmetric'][0].post_softmax == 'tan_symmetric'
    assert resolved['tanq_only'][0].tanq_search == {}
    assert resolved['repq-calib128'][1] == resolved['dopq-calib128'][1] == 128
    assert resolved['repq-calib128'][0].post_softmax == 'log_sqrt2'
    assert resolved['dopq'][1] == 32
    ste = resolved['dopq-recon1000-ste'][0].reconstruct_settings
    assert (ste.weight_mode, ste.iters, ste.batch_size) == ('ste', 1000, 4)  # config's batch
    assert resolved['dopq-recon1000-nostop'][0].reconstruct_settings.patience == 0
    assert resolved['dopq-recon-backbone'][0].scope == 'backbone'
    assert resolved['dopq-backbone'][0].reconstruct_settings is None
    assert resolved['dopq-backbone_neck'][0].scope == 'backbone_neck'
    heads = resolved['dopq-recon-heads'][0].reconstruct_settings
    assert heads.heads and heads.neck and heads.iters == 300
