"""Quantize a model with an mmdopq config, evaluate it, save it.

The checkout's copy of ``mmdopq-quantize`` (see :mod:`mmdopq.apis.quantize_cli`)::

    python tools/quantize.py CONFIG CHECKPOINT [--work-dir DIR] [--recipe NAME] [--bits wXaY]
                             [--seed N] [--cfg-options k=v ...] [--launcher none|pytorch]
"""

from mmdopq.apis.quantize_cli import main

if __name__ == '__main__':
    main()
