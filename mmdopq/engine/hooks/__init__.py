"""Hooks registered in :data:`mmdopq.registry.HOOKS` (imported lazily by MMEngine)."""

from .quant_calibration_hook import QuantCalibrationHook

__all__ = ['QuantCalibrationHook']
