"""mmdopq's command-line tools (not part of the library).

Most are plain scripts (``python tools/quantize.py ...``); the model converters that share
:mod:`tools.model_converters.swin_checkpoint` run as modules from the repository root
(``python -m tools.model_converters.swin_od_to_mmdet ...``). The package lets the tests import
them (``from tools.model_converters import swin_od_to_mmdet``).
"""
