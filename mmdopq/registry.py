"""mmdopq's registries: scope ``mmdopq`` children of MMEngine's root registries.

Every mmdopq type is registered here and addressed with the scope prefix, ``mmdopq.X``, while
the default scope stays the host's (``mmdet``) so that all unprefixed types in a config keep
resolving in mmdet (see docs/install.md, "Registries and scope").

How a prefixed name resolves: ``mmdet.registry.MODELS.build(dict(type='mmdopq.QuantizedModel'))``
splits the scope ``mmdopq`` off the name; mmdet's registry has no such child, so MMEngine imports
``mmdopq.registry`` (this module, which attaches the children below to MMEngine's root
registries) and looks the name up in the root registry's ``mmdopq`` child. The child then
imports its ``locations`` on first use, which registers the classes. Objects an mmdopq class
builds itself keep the default scope: with scope ``mmdet`` active, ``MODELS.build(dict(
type='FPN', ...))`` from inside an mmdopq module finds mmdet's ``FPN``.
"""

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

SCOPE = 'mmdopq'

# Quantized model wrappers (QuantizedModel) and anything they build by name.
MODELS = Registry('model', parent=MMENGINE_MODELS, scope=SCOPE, locations=['mmdopq.models'])
# Calibration and observability hooks.
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope=SCOPE, locations=['mmdopq.engine.hooks'])
# Metrics (e.g. ImageNet top-1 for the classification track, quantization error metrics).
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope=SCOPE, locations=['mmdopq.evaluation'])
# Only the registries something registers into: add a child (with its ``locations``) when an
# mmdopq dataset, transform, loop or visualizer is written.

__all__ = ['SCOPE', 'MODELS', 'HOOKS', 'METRICS']
