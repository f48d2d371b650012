"""Recipe sweeps over the reference models: the demo's and the recipe benchmark's engine.

:mod:`.variants` names the recipe variants, :mod:`.runner` runs ``tools/quantize.py`` once per
(model, variant, bits, seed) and reuses finished runs, :mod:`.report` summarises them into
``results.json`` / ``results.md`` and :mod:`.plots` draws them.
"""

from .plots import make_plots, plot_metric_vs_bits, plot_mosf_scales
from .report import (
    compare_recipes,
    compare_reconstruction,
    machine_info,
    merge_earlier,
    percent,
    render_markdown,
    summarize,
    write_results,
)
from .runner import (
    RunSpec,
    build_specs,
    load_recorded_runs,
    options_dir,
    run_quantize,
    run_record,
    run_sweep,
)
from .variants import FINE_CENTRES, FINE_FRACTIONS, VARIANT_NOTES, VARIANTS

__all__ = [
    'FINE_CENTRES',
    'FINE_FRACTIONS',
    'VARIANTS',
    'VARIANT_NOTES',
    'RunSpec',
    'build_specs',
    'compare_reconstruction',
    'compare_recipes',
    'load_recorded_runs',
    'machine_info',
    'make_plots',
    'merge_earlier',
    'options_dir',
    'percent',
    'plot_metric_vs_bits',
    'plot_mosf_scales',
    'render_markdown',
    'run_quantize',
    'run_record',
    'run_sweep',
    'summarize',
    'write_results',
]
