"""Tests of benchmarks/: the recipe sweep, the reference models and their data generators."""
