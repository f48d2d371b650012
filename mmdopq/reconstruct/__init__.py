"""Block reconstruction after calibration (BRECQ / QDrop style), pure torch.

:func:`reconstruct` optimises, unit by unit in forward order (patch embedding, blocks,
patch merging, head; optionally a detector's neck), the weight rounding (AdaRound) and
the steps of the uniform activation quantizers (LSQ) of a calibrated model against the
float model's output, with QDrop's random drop of activation quantization, and writes the
result back as ordinary quantizer state: integer-grid weights and scale buffers.

It is the last stage of :func:`mmdopq.apis.calibrate` when the recipe has a
``reconstruct`` setting::

    quantize(model, dict(recipe='dopq', wbits=4, abits=4, reconstruct=dict(iters=300)), loop)

or it runs on its own on a calibrated model: ``reconstruct(model, loop, dict(iters=300))``.
"""

from .adaround import AdaRoundWeight
from .cache import UnitCache
from .lsq import LSQActQuantizer
from .progress import ProgressLine
from .settings import ReconstructSettings, check_reconstruct
from .stage import reconstruct
from .ste_weight import SteWeight
from .unit import UnitReconstructor

__all__ = [
    'AdaRoundWeight',
    'LSQActQuantizer',
    'ProgressLine',
    'ReconstructSettings',
    'SteWeight',
    'UnitCache',
    'UnitReconstructor',
    'check_reconstruct',
    'reconstruct',
]
