"""Import-time checks of the OpenMMLab / torch versions mmdopq is built against.

The checks read installed distribution metadata and never import mmcv, mmdet or ``mmcv.ops``:
``import mmdopq`` stays cheap. Compiled mmcv ops are checked lazily by :func:`check_mmcv_ops`,
which code that needs them (the detection adapters, the tests) calls explicitly.
"""

import importlib
import importlib.util
from collections.abc import Mapping
from importlib import metadata
from typing import NamedTuple, Optional

from packaging.version import InvalidVersion, Version

FIX_HINT = (
    'Fix: run `make install` in the mmdopq repository (it sets up the virtual '
    'environment with the supported versions, see docs/install.md).'
)


class VersionRequirement(NamedTuple):
    """A supported version range ``minimum <= version < maximum`` of one package.

    Attributes:
        package (str): Import name, used in messages (``'mmcv'``, ``'torch'``...).
        minimum (str): Smallest supported version (inclusive).
        maximum (str, optional): First unsupported version (exclusive); ``None`` for no bound.
        required (bool): If True a missing package is an error; if False the check is skipped
            when the package is not installed.
    """

    package: str
    minimum: str
    maximum: Optional[str] = None
    required: bool = True

    def describe(self) -> str:
        """Return the range as a pip specifier, e.g. ``'mmcv>=2.0.0rc4,<2.2.0'``."""
        spec = f'{self.package}>={self.minimum}'
        if self.maximum is not None:
            spec += f',<{self.maximum}'
        return spec


# torch is required (the pure-torch core needs it). mmengine and mmcv are checked when installed:
# the pure-torch core (quantizers, nn, reparam) works without them, and everything that needs
# them imports them itself. mmcv: the range mmdet 3.3.0 itself accepts. mmengine: the 0.10
# series mmdet 3.3 and the checkpoint compatibility patch (mmdopq.utils.compat) are written for.
REQUIREMENTS = (
    VersionRequirement('torch', '2.0'),
    VersionRequirement('mmengine', '0.10.0', '1.0', required=False),
    VersionRequirement('mmcv', '2.0.0rc4', '2.2.0', required=False),
)

# Distributions that provide each import name, in order of preference.
_DISTRIBUTIONS = {
    'torch': ('torch',),
    'mmengine': ('mmengine', 'mmengine-lite'),
    'mmcv': ('mmcv', 'mmcv-lite', 'mmcv-full'),
}


def installed_version(package: str) -> Optional[str]:
    """Return the installed version of an importable package without importing it.

    Distribution metadata is used first; a package importable without metadata (e.g. a source
    checkout on ``sys.path``) falls back to importing it and reading ``__version__``.

    Args:
        package (str): Import name, e.g. ``'mmcv'``.

    Returns:
        str, optional: The version string, or ``None`` if the package is not importable.
    """
    if importlib.util.find_spec(package) is None:
        return None
    for dist in _DISTRIBUTIONS.get(package, (package,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    module = importlib.import_module(package)
    return getattr(module, '__version__', None)


def check_version(requirement: VersionRequirement, installed: Optional[str]) -> None:
    """Check one installed version against its supported range.

    This function is pure (the installed version is passed in), so it is testable with any
    version string.

    Args:
        requirement (VersionRequirement): The supported range.
        installed (str, optional): The installed version, ``None`` if not installed.

    Raises:
        ImportError: If the package is required but missing, or its version is out of range.
            The message names the package, the installed version, the supported range and
            the fix.
    """
    spec = requirement.describe()
    if installed is None:
        if requirement.required:
            raise ImportError(
                f'mmdopq requires {spec}, but {requirement.package} is not installed. {FIX_HINT}'
            )
        return
    try:
        # Local build tags (``2.14.1+cu130``) and pre-releases compare as PEP 440 says.
        version = Version(installed)
    except InvalidVersion as e:
        raise ImportError(
            f'mmdopq requires {spec}, but the installed {requirement.package} '
            f'reports an unparsable version {installed!r}. {FIX_HINT}'
        ) from e
    too_old = version < Version(requirement.minimum)
    too_new = requirement.maximum is not None and version >= Version(requirement.maximum)
    if too_old or too_new:
        raise ImportError(
            f'mmdopq requires {spec}, but {requirement.package}=={installed} is '
            f'installed. {FIX_HINT}'
        )


def check_dependencies(versions: Optional[Mapping[str, Optional[str]]] = None) -> None:
    """Check torch and (if installed) mmengine and mmcv against the supported ranges.

    Args:
        versions (Mapping[str, str | None], optional): Installed versions by package name, for
            testing. Packages not in the mapping are looked up with :func:`installed_version`.
            Defaults to None (look everything up).

    Raises:
        ImportError: On the first missing or out-of-range package, see :func:`check_version`.
    """
    versions = {} if versions is None else versions
    for requirement in REQUIREMENTS:
        if requirement.package in versions:
            installed = versions[requirement.package]
        else:
            installed = installed_version(requirement.package)
        check_version(requirement, installed)


def check_mmcv_ops():
    """Import and return ``mmcv.ops``, explaining the usual failure modes.

    mmdet's detectors (even the Swin backbone) import mmcv's compiled ops. They are missing
    when ``mmcv-lite`` is installed instead of ``mmcv``, or when mmcv was built against
    another torch (undefined symbols when loading ``mmcv._ext``).

    Returns:
        module: The ``mmcv.ops`` module.

    Raises:
        ImportError: If ``mmcv.ops`` cannot be imported; the message says which mmcv
            distribution is installed, what is needed and how to fix it.
    """
    try:
        return importlib.import_module('mmcv.ops')
    except ImportError as e:
        if importlib.util.find_spec('mmcv') is None:
            found = 'mmcv is not installed'
        else:
            dists = []
            for dist in _DISTRIBUTIONS['mmcv']:
                try:
                    dists.append(f'{dist}=={metadata.version(dist)}')
                except metadata.PackageNotFoundError:
                    continue
            found = 'installed: ' + (', '.join(dists) or 'mmcv without package metadata')
            if any(d.startswith('mmcv-lite') for d in dists):
                found += (
                    ' (mmcv-lite has no compiled ops: uninstall it and install the full '
                    '`mmcv` with compiled ops)'
                )
        raise ImportError(
            f'mmcv.ops cannot be imported ({type(e).__name__}: {e}). mmdopq needs the full '
            f'`mmcv` distribution with compiled ops (not `mmcv-lite`), built against the '
            f'installed torch; {found}. {FIX_HINT}'
        ) from e


__all__ = [
    'REQUIREMENTS',
    'VersionRequirement',
    'check_dependencies',
    'check_mmcv_ops',
    'check_version',
    'installed_version',
]
