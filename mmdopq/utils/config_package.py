"""Make ``mmdopq::`` config references resolve, as ``mmdet::`` ones do.

A config anywhere may inherit mmdopq's shipped bases::

    _base_ = ['./my_model.py', 'mmdopq::_base_/quant/dopq_w4a4.py']

mmengine 0.10.7 resolves ``pkg::path`` only for the packages in its own table
``mmengine.config.utils.MODULE2PACKAGE`` (an assertion, with no registration hook), and looks
for ``<installed path of pkg>/.mim/configs/path``, where the installed path comes from the
distribution's metadata. Two things follow:

* :func:`register_config_package` adds ``mmdopq`` to that table (``import mmdopq`` calls it);
* for ``mmdopq`` the installed path is taken from the imported package itself: with an
  editable install (``pip install -e .``, what ``make install`` runs) the metadata lives in
  site-packages while the code, and ``mmdopq/.mim/configs`` (a link to ``configs/``), stays in
  the checkout.

Configs are parsed before anything imports their types, so a tool must import mmdopq before it
loads a config with ``mmdopq::`` bases: ``mmdopq-quantize`` does; mmdet's own
``tools/test.py`` does not (use it with configs inside the checkout, whose bases are relative).
"""

import os.path as osp

PACKAGE = 'mmdopq'


def package_dir() -> str:
    """The directory of the imported ``mmdopq`` package (it holds ``.mim/configs``)."""
    return osp.dirname(osp.dirname(osp.abspath(__file__)))


def register_config_package() -> bool:
    """Let mmengine's Config resolve ``mmdopq::`` references. Idempotent.

    Returns:
        bool: True if this call registered the package, False if it already was.
    """
    import mmengine.config.config as config_module
    from mmengine.config.utils import MODULE2PACKAGE

    MODULE2PACKAGE.setdefault(PACKAGE, PACKAGE)
    original = config_module.get_installed_path
    if getattr(original, 'mmdopq_aware', False):
        return False

    def get_installed_path(package: str) -> str:
        if package == PACKAGE:
            return package_dir()
        return original(package)

    get_installed_path.mmdopq_aware = True
    config_module.get_installed_path = get_installed_path
    return True


__all__ = ['register_config_package']
