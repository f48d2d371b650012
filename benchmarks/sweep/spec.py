"""One run of a sweep: which model, variant, bits and seed, and the command that runs it."""

from __future__ import annotations

import os.path as osp
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from ..reference.models import REPO_ROOT, ReferenceModel
from .variants import VARIANTS

QUANTIZE_TOOL = osp.join(REPO_ROOT, 'tools', 'quantize.py')


@dataclass
class RunSpec:
    """One ``tools/quantize.py`` run.

    Attributes:
        model: The reference model.
        variant: A key of :data:`VARIANTS`.
        bits: ``'w4a4'`` etc. (ignored for ``'float'``).
        seed: Calibration seed (image draw and quantizer subsampling).
        work_dir: Where the run writes its log and ``results.json``.
        checkpoint: Float checkpoint (default: the model's committed one).
        cfg_options: Extra ``--cfg-options`` (e.g. a val subset).
        save: Write ``quantized.pth``.
    """

    model: ReferenceModel
    variant: str
    bits: str
    seed: int
    work_dir: str
    checkpoint: Optional[str] = None
    cfg_options: Sequence[str] = field(default_factory=tuple)
    save: bool = False

    @property
    def label(self) -> str:
        if self.variant == 'float':
            return f'{self.model.name} float'
        return f'{self.model.name} {self.variant} {self.bits} seed {self.seed}'

    def command(self, python: str = sys.executable) -> list[str]:
        if self.variant not in VARIANTS:
            raise ValueError(f'unknown variant {self.variant!r}; choose from {sorted(VARIANTS)}')
        recipe, options = VARIANTS[self.variant]
        cmd = [python, QUANTIZE_TOOL, self.model.path('quant_config')]
        cmd += [self.checkpoint or self.model.path('checkpoint'), '--work-dir', self.work_dir]
        cmd += ['--recipe', recipe, '--seed', str(self.seed)]
        if self.variant != 'float':
            cmd += ['--bits', self.bits]
        if not self.save:
            cmd.append('--no-save')
        opts = [*options, *self.cfg_options]
        if opts:
            cmd += ['--cfg-options', *opts]
        return cmd
