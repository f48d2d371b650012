"""How does quantization change a classifier's predictions? Image by image, float vs quantized.

Loads a quantized checkpoint written by ``tools/quantize.py`` (no re-calibration), evaluates it
as is and with every quantizer switched off (the float model: the LayerNorm fold is exact),
and compares the two predictions of every test image::

    python tools/analysis/prediction_changes.py CONFIG QUANTIZED_CKPT [--work-dir DIR]
        [--recipe NAME] [--bits wXaY] [--margins 0.05 0.1 ...] [--cfg-options k=v ...]

Reports the top-1 of both, the share of images whose prediction changed, split into right ->
wrong and wrong -> right (the top-1 loss is their difference), the share of images whose float
top-1 margin (top-1 minus top-2 probability) is below each ``--margins`` threshold, and the
logit SQNR (float logits' power over the power of their change, in dB; logits are the log
probabilities centred per image, so the softmax's free constant does not count). Writes
``prediction_changes.json`` and ``.md`` into the work dir (atomically). Classifiers only.
"""

from __future__ import annotations

import math
import os.path as osp
from collections.abc import Sequence

import torch
from torch import Tensor

from mmdopq.apis import analysis
from mmdopq.utils.fileio import dump_json_atomic, write_text_atomic

DEFAULT_MARGINS = (0.05, 0.1, 0.2, 0.3)


def parse_args(argv=None):
    parser = analysis.analysis_parser(
        'mmdopq: float vs quantized predictions of a classifier, image by image',
        'prediction_changes.{json,md}',
    )
    parser.add_argument(
        '--margins',
        nargs='+',
        type=float,
        default=list(DEFAULT_MARGINS),
        help='float top-1 margin thresholds to count images below',
    )
    return parser.parse_args(argv)


def compare_predictions(
    float_scores: Tensor,
    quant_scores: Tensor,
    labels: Tensor,
    margins: Sequence[float] = DEFAULT_MARGINS,
) -> dict:
    """Compare the class probabilities of the float and the quantized model.

    Args:
        float_scores: ``[N, C]`` float-model probabilities (rows sum to 1).
        quant_scores: ``[N, C]`` quantized-model probabilities of the same images.
        labels: ``[N]`` ground-truth classes.
        margins: Thresholds for the float top-1 margin.

    Returns:
        dict: Percentages ``float_top1``, ``quant_top1``, ``changed``, ``right_to_wrong``,
        ``wrong_to_right`` and ``margin_below`` (threshold -> share), and ``logit_sqnr_db``.

    Raises:
        ValueError: The shapes do not match, there are fewer than two classes, or a margin
            threshold is outside (0, 1].
    """
    if float_scores.dim() != 2 or float_scores.shape != quant_scores.shape:
        raise ValueError(
            f'scores must be two [N, C] tensors of one shape, got {tuple(float_scores.shape)} '
            f'and {tuple(quant_scores.shape)}'
        )
    n, c = float_scores.shape
    if c < 2 or labels.shape != (n,):
        raise ValueError(
            f'need >= 2 classes and {n} labels, got C={c}, labels {tuple(labels.shape)}'
        )
    bad = [m for m in margins if not 0.0 < m <= 1.0]
    if bad:
        raise ValueError(f'margin thresholds must be in (0, 1], got {bad}')
    pf, pq = float_scores.double(), quant_scores.double()
    yf, yq = pf.argmax(1), pq.argmax(1)
    right_f, right_q = yf == labels, yq == labels

    def pct(mask: Tensor) -> float:
        return 100.0 * mask.double().mean().item()

    def centred_log(p: Tensor) -> Tensor:
        logp = p.clamp_min(1e-12).log()
        return logp - logp.mean(1, keepdim=True)

    lf, lq = centred_log(pf), centred_log(pq)
    noise = (lq - lf).pow(2).sum().item()
    signal = lf.pow(2).sum().item()
    top2 = pf.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    return dict(
        images=n,
        float_top1=pct(right_f),
        quant_top1=pct(right_q),
        changed=pct(yf != yq),
        right_to_wrong=pct(right_f & ~right_q),
        wrong_to_right=pct(~right_f & right_q),
        margin_below={str(m): pct(margin < m) for m in margins},
        logit_sqnr_db=math.inf if noise == 0 else 10.0 * math.log10(signal / noise),
    )


def markdown(record: dict) -> str:
    r = record['result']
    margins = ', '.join(f'< {m}: {v:.1f} %' for m, v in r['margin_below'].items())
    return '\n'.join(
        [
            f'# Prediction changes: {osp.basename(record["config"])}',
            '',
            f'- checkpoint: `{record["checkpoint"]}` (recipe {record["recipe"]}, '
            f'{record["bits"]}); {r["images"]} test images',
            f'- top-1: float {r["float_top1"]:.2f} %, quantized {r["quant_top1"]:.2f} %',
            f'- predictions changed: {r["changed"]:.2f} % (right -> wrong '
            f'{r["right_to_wrong"]:.2f} %, wrong -> right {r["wrong_to_right"]:.2f} %)',
            f'- float top-1 margin {margins}',
            f'- logit SQNR: {r["logit_sqnr_db"]:.2f} dB',
            '',
        ]
    )


def main(argv=None) -> dict:
    """Run the analysis; returns the record also written to ``prediction_changes.json``."""
    args = parse_args(argv)
    from mmdopq.quantizers import BaseQuantizer, quantizers_off

    cfg, recipe, runner, model, loaded, _ = analysis.build_analysis_runner(
        args, 'prediction_changes'
    )
    quantizers = [m for m in model.modules() if isinstance(m, BaseQuantizer)]
    scores: list[Tensor] = []
    labels: list[int] = []
    test_step = model.test_step

    def capture(data):
        out = test_step(data)
        for sample in out:
            if not hasattr(sample, 'pred_score'):
                raise ValueError(
                    f'{args.config}: {type(sample).__name__} has no pred_score; '
                    'prediction_changes.py compares classifiers only'
                )
            scores.append(sample.pred_score.detach().float().cpu())
            labels.append(int(sample.gt_label))
        return out

    model.test_step = capture  # the test loop calls model.test_step; wrap it to keep scores
    try:
        runner.test()
        quant_scores, quant_labels = torch.stack(scores), list(labels)
        scores.clear()
        labels.clear()
        with quantizers_off(quantizers):
            runner.test()
    finally:
        del model.test_step
    if labels != quant_labels:
        raise RuntimeError('the two test passes saw the images in a different order')
    result = compare_predictions(
        torch.stack(scores), quant_scores, torch.tensor(labels), args.margins
    )
    record = dict(
        **analysis.analysis_record(args.config, args.checkpoint, recipe, loaded, argv),
        result=result,
    )
    text = markdown(record)
    dump_json_atomic(record, osp.join(cfg.work_dir, 'prediction_changes.json'))
    write_text_atomic(osp.join(cfg.work_dir, 'prediction_changes.md'), text)
    runner.logger.info(text)
    return record


if __name__ == '__main__':
    main()
