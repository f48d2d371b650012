"""Shared plumbing of the analysis tools (``tools/analysis/``), which study a saved quantized
checkpoint without calibrating it again."""

from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Optional

from ..nn import set_quant_mode
from ..recipe import QuantRecipe
from .quantize_cli import build_runner, versions


def analysis_parser(description: str, outputs: str) -> argparse.ArgumentParser:
    """The arguments every analysis tool of a saved quantized checkpoint takes.

    ``config``, ``checkpoint``, ``--work-dir``, ``--recipe``, ``--bits`` and
    ``--cfg-options``, as :func:`build_analysis_runner` reads them; the tool adds its own.

    Args:
        description: The tool's description.
        outputs: What the tool writes into its work dir (for the help text).
    """
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='the mmdopq config the checkpoint was quantized with')
    parser.add_argument('checkpoint', help='quantized checkpoint (quantized.pth of quantize.py)')
    parser.add_argument('--work-dir', help=f'where {outputs} and logs go')
    parser.add_argument(
        '--recipe', help='the --recipe the checkpoint was quantized with (as for quantize.py)'
    )
    parser.add_argument('--bits', help='the --bits the checkpoint was quantized with, e.g. w6a6')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='override config keys, xxx=yyy format'
    )
    return parser


def build_analysis_runner(tool_args: argparse.Namespace, tool: str) -> tuple:
    """:func:`build_runner` for the analysis tools, which study a saved quantized checkpoint.

    Args:
        tool_args: The tool's parsed arguments: ``config`` (the mmdopq config the checkpoint
            was quantized with), ``checkpoint`` (a ``quantized.pth`` of this tool),
            ``work_dir`` (default ``work_dirs/<config name>/<tool>``), ``recipe`` and ``bits``
            (as it was quantized with) and ``cfg_options`` (e.g. a held-out test split).
        tool: Name of the calling tool (default work dir).

    Returns:
        tuple: As :func:`build_runner`; the model is in ``quant`` mode, so a tool that
        runs it directly (not through ``runner.test()``, whose calibration hook sets the
        mode) runs the quantized model.

    Raises:
        ValueError: The recipe is ``float`` or the checkpoint holds no quantizer state (the
            analysis tools never calibrate).
    """
    config, checkpoint = tool_args.config, tool_args.checkpoint
    work_dir = tool_args.work_dir or osp.join(
        'work_dirs', osp.splitext(osp.basename(config))[0], tool
    )
    args = argparse.Namespace(
        config=config,
        checkpoint=checkpoint,
        recipe=tool_args.recipe,
        bits=tool_args.bits,
        seed=None,
        cfg_options=tool_args.cfg_options,
        launcher='none',
        work_dir=work_dir,
        out=None,
    )
    cfg, recipe, runner, model, loaded, was_quantized = build_runner(args)
    if recipe.is_float:
        raise ValueError(f'{config}: the float recipe has no quantizers to study')
    if not was_quantized:
        raise ValueError(
            f'{checkpoint} is a float checkpoint; quantize it first with tools/quantize.py '
            '(this tool studies the saved quantization parameters, it does not calibrate)'
        )
    set_quant_mode(model, 'quant')
    return cfg, recipe, runner, model, loaded, was_quantized


def analysis_record(
    config: str, checkpoint: str, recipe: QuantRecipe, loaded: dict, argv: Optional[list]
) -> dict:
    """What an analysis record says about the checkpoint it studied and the run itself.

    Recipe, calibration seed and ids (from the checkpoint's meta), package versions and the
    tool's arguments (``argv``; ``None``: ``sys.argv``).
    """
    ckpt = loaded['ckpt']
    meta = (ckpt.get('meta') or {}) if isinstance(ckpt, dict) else {}
    calib = meta.get('calibration') or {}
    return dict(
        config=config,
        checkpoint=checkpoint,
        recipe=recipe.recipe,
        bits=recipe.bits_tag,
        quant=recipe.to_dict(),
        calibration_seed=calib.get('seed'),
        calibration_ids=calib.get('calib_ids'),
        versions=versions(),
        argv=sys.argv if argv is None else list(argv),
    )
