"""mmdopq's benchmarks, demo and reference-model machinery (not part of the library).

Run from the repository root as modules: ``python -m benchmarks.demo``,
``python -m benchmarks.bench_recipes``, ``python -m benchmarks.reference.make_data``...
"""
