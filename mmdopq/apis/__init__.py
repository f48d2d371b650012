"""User entry points.

* :func:`quantize`, :func:`prepare`, :func:`calibrate`: quantize a PyTorch model in plain
  PyTorch (no Runner, no config), see :mod:`mmdopq.calibrate`.
* :mod:`mmdopq.apis.quantize_cli`: the config-driven tool (``mmdopq-quantize``,
  ``python -m mmdopq quantize``, ``tools/quantize.py``): build the model from an mmdopq
  config, load a checkpoint, calibrate in the hook, evaluate, save ``quantized.pth`` and
  ``results.json``. Imported on demand (it needs mmengine).
"""

from ..calibrate import calibrate, prepare, quantize
from ..recipe import RECIPES, QuantRecipe

__all__ = ['RECIPES', 'QuantRecipe', 'calibrate', 'prepare', 'quantize']
