"""mmdopq's registries: scope ``mmdopq`` children of MMEngine's root registries.

Every mmdopq type is registered here and addressed with the scope prefix, ``mmdopq.X``, while
the default scope stays the host's (``mmdet``) so that all unprefixed types in a config keep
resolving in mmdet (see README.md, "Registries and scope").

How a prefixed name resolves: ``mmdet.registry.MODELS.build(dict(type='mmdopq.QuantizedModel'))``
splits the scope ``mmdopq`` off the name; mmdet's registry has no such child, so MMEngine imports
``mmdopq.registry`` (this module, which attaches the children below to MMEngine's root
registries) and looks the name up in the root registry's ``mmdopq`` child. The child then
imports its ``locations`` on first use, which registers the classes. Objects an mmdopq class
builds itself keep the default scope: with scope ``mmdet`` active, ``MODELS.build(dict(
type='FPN', ...))`` from inside an mmdopq module finds mmdet's ``FPN``.
"""

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

SCOPE = 'mmdopq'

# Quantized model wrappers (QuantizedModel) and anything they build by name.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope=SCOPE, locations=['mmdopq.models'])
# Calibration and observability hooks.
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope=SCOPE, locations=['mmdopq.engine.hooks'])
# Runners and loops (e.g. a calibration-only loop).
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope=SCOPE, locations=['mmdopq.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope=SCOPE, locations=['mmdopq.engine'])
# Calibration datasets, their samplers and transforms.
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope=SCOPE, locations=['mmdopq.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS, scope=SCOPE, locations=['mmdopq.datasets']
)
TRANSFORMS = Registry(
    'transform', parent=MMENGINE_TRANSFORMS, scope=SCOPE, locations=['mmdopq.datasets']
)
# Metrics (e.g. ImageNet top-1 for the classification track, quantization error metrics).
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope=SCOPE, locations=['mmdopq.evaluation'])
# No mmdopq visualizer yet; add ``locations`` when one is written.
VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS, scope=SCOPE)

__all__ = [
    'SCOPE',
    'MODELS',
    'HOOKS',
    'RUNNERS',
    'LOOPS',
    'DATASETS',
    'DATA_SAMPLERS',
    'TRANSFORMS',
    'METRICS',
    'VISUALIZERS',
]
