"""The reference models (configs, committed checkpoints) and their generated data."""

from .data import TUNE_SEED_OFFSET, ensure_data, ensure_tune_split, synthetic_data_spec
from .models import REFERENCE_MODELS, REPO_ROOT, ReferenceModel, get_reference_model

__all__ = [
    'REFERENCE_MODELS',
    'REPO_ROOT',
    'TUNE_SEED_OFFSET',
    'ReferenceModel',
    'ensure_data',
    'ensure_tune_split',
    'get_reference_model',
    'synthetic_data_spec',
]
