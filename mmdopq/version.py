"""Version of mmdopq.

This module has no imports, so ``setup.py`` can read it without importing the package.
"""

__version__ = '0.1.0'


def parse_version_info(version_str: str) -> tuple:
    """Split a version string into a tuple of ints, keeping a pre-release tag as a string.

    Args:
        version_str (str): A version such as ``'0.1.0'`` or ``'0.2.0rc1'``.

    Returns:
        tuple: For example ``(0, 1, 0)`` or ``(0, 2, 0, 'rc1')``.
    """
    info: list = []
    for part in version_str.split('.'):
        digits = len(part) - len(part.lstrip('0123456789'))
        if digits:
            info.append(int(part[:digits]))
        if part[digits:]:
            info.append(part[digits:])
    return tuple(info)


version_info = parse_version_info(__version__)
short_version = '.'.join(str(x) for x in version_info[:3])

__all__ = ['__version__', 'version_info', 'short_version', 'parse_version_info']
