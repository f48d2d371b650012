"""Packaging for mmdopq.

Install with ``make install`` (it builds mmcv with compiled ops first, see ``tools/install.sh``);
the ``install_requires`` below deliberately omit mmcv, which pip cannot install correctly here.
"""

import os.path as osp
import re

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def get_version() -> str:
    """Read ``__version__`` from ``mmdopq/version.py`` without importing the package."""
    namespace: dict = {}
    with open(osp.join(ROOT, 'mmdopq', 'version.py'), encoding='utf-8') as f:
        exec(compile(f.read(), 'mmdopq/version.py', 'exec'), namespace)
    return namespace['__version__']


def parse_requirements(fname: str) -> list:
    """Parse a pip requirements file into a list of requirement strings.

    Blank lines, comments (whole-line or trailing) and pip options such as ``-r other.txt``
    or ``--index-url`` are skipped.

    Args:
        fname (str): Path of the requirements file, relative to the repository root.

    Returns:
        list[str]: Requirement specifiers, e.g. ``['numpy>=1.24,<2', 'timm==1.0.31']``.
    """
    requirements = []
    with open(osp.join(ROOT, fname), encoding='utf-8') as f:
        for line in f:
            line = re.sub(r'(^|\s)#.*$', '', line).strip()
            if not line or line.startswith('-'):
                continue
            requirements.append(line)
    return requirements


def readme() -> str:
    """Return the README used as the long description."""
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


if __name__ == '__main__':
    setup(
        name='mmdopq',
        version=get_version(),
        description='DopQ-ViT post-training quantization of vision transformers for MMDetection',
        long_description=readme(),
        long_description_content_type='text/markdown',
        keywords='post-training quantization, vision transformer, object detection, mmdetection',
        packages=find_packages(
            exclude=(
                'tests',
                'tests.*',
                'configs',
                'configs.*',
                'tools',
                'tools.*',
                'benchmarks',
                'benchmarks.*',
            )
        ),
        include_package_data=True,
        python_requires='>=3.9',
        classifiers=[
            'Programming Language :: Python :: 3',
            'Programming Language :: Python :: 3.9',
            'Programming Language :: Python :: 3.10',
            'Programming Language :: Python :: 3.11',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        install_requires=parse_requirements('requirements/runtime.txt'),
        extras_require={
            'tests': parse_requirements('requirements/tests.txt'),
            'mim': parse_requirements('requirements/mminstall.txt'),
        },
        zip_safe=False,
    )
