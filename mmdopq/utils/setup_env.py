"""Environment set-up: register every mmdopq (and mmdet) module, set the default scope."""

import datetime
import warnings

# The host scope. mmdopq extends mmdet: configs are mmdet configs in which mmdopq types are named
# with their scope prefix (``mmdopq.QuantizedModel``), so the default scope is mmdet's.
DEFAULT_SCOPE = 'mmdet'


def register_all_modules(init_default_scope: bool = True) -> None:
    """Register all modules of mmdet and mmdopq into their registries.

    mmdopq's modules are also registered on demand (MMEngine imports each registry's
    ``locations`` the first time a ``mmdopq.X`` name is looked up); calling this function makes
    every registry complete up front, e.g. for scripts that list registered types.

    Args:
        init_default_scope (bool): Whether to set the default scope to ``'mmdet'``, not
            ``'mmdopq'``: mmdopq is an extension of mmdet and keeps the host scope, so that the
            unprefixed types in a config (detectors, transforms, metrics, hooks...) resolve in
            mmdet, while mmdopq's own types are always written ``mmdopq.X``, which resolves
            whatever the default scope is. If the current default scope is another one, a new
            ``'mmdet'`` scope instance is created and made current, with a warning, as mmdet's
            ``register_all_modules`` does. Defaults to True.
    """
    from mmdet.utils import register_all_modules as register_mmdet_modules

    register_mmdet_modules(init_default_scope=False)

    import mmdopq.engine  # noqa: F401
    import mmdopq.evaluation  # noqa: F401
    import mmdopq.models  # noqa: F401
    import mmdopq.registry  # noqa: F401

    if not init_default_scope:
        return
    from mmengine.registry import DefaultScope

    current = DefaultScope.get_current_instance()
    if current is None:
        DefaultScope.get_instance(DEFAULT_SCOPE, scope_name=DEFAULT_SCOPE)
    elif current.scope_name != DEFAULT_SCOPE:
        warnings.warn(
            f'The current default scope "{current.scope_name}" is not "{DEFAULT_SCOPE}"; '
            f'`register_all_modules` sets it to "{DEFAULT_SCOPE}" (mmdopq keeps the host '
            'scope; name mmdopq types "mmdopq.X").',
            stacklevel=2,
        )
        stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S.%f')
        DefaultScope.get_instance(f'{DEFAULT_SCOPE}-{stamp}', scope_name=DEFAULT_SCOPE)


__all__ = ['DEFAULT_SCOPE', 'register_all_modules']
