"""High-level entry points: reference models and their data, recipe sweeps (demo, benchmark)."""

from .recipe_sweep import VARIANTS, RunSpec, run_quantize, summarize, write_results
from .reference import (
    REFERENCE_MODELS,
    ReferenceModel,
    ensure_data,
    ensure_tune_split,
    get_reference_model,
)

__all__ = [
    'REFERENCE_MODELS',
    'VARIANTS',
    'ReferenceModel',
    'RunSpec',
    'ensure_data',
    'ensure_tune_split',
    'get_reference_model',
    'run_quantize',
    'summarize',
    'write_results',
]
