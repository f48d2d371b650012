"""Packaging for mmdopq.

Install with ``make install`` (it builds mmcv with compiled ops first, see ``tools/install.sh``);
the ``install_requires`` below deliberately omit mmcv, which pip cannot install correctly here.

The configs ship with the package, as in mmdet: ``mmdopq/.mim/configs`` is what mmengine's
``Config`` reads for a ``mmdopq::<path>`` base (see :func:`add_mim_extension`).
"""

import os
import os.path as osp
import re
import shutil

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
#: Where mmengine looks for an installed package's configs: ``<package>/.mim/configs``.
MIM_DIR = osp.join('mmdopq', '.mim')
#: mmengine 0.10.7 first loads ``.mim/model-index.yml`` for every ``mmdopq::`` path (to look the
#: path up as a model-zoo entry) and only falls back to ``.mim/configs/<path>`` when the index
#: does not list it; without the file it raises ``FileNotFoundError`` instead. mmdopq publishes
#: no model-zoo metafiles, so the index imports none.
MODEL_INDEX = (
    '# Written by setup.py. mmengine reads it before resolving `mmdopq::` config paths; mmdopq\n'
    '# lists no model-zoo metafiles, so every path falls back to .mim/configs/<path>.\n'
    'Import: []\n'
)
#: Files of ``configs/`` that are shipped (``mmdopq/.mim/configs/**/<pattern>``).
CONFIG_FILE_PATTERNS = ('*.py', '*.json', '*.md')


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


def add_mim_extension() -> None:
    """Put ``configs/`` into the package as ``mmdopq/.mim/configs``, like mmdet's setup.py.

    mmengine's ``Config`` resolves a ``mmdopq::<path>`` base to
    ``<installed mmdopq>/.mim/configs/<path>``. Here ``mmdopq/.mim/configs`` is a relative
    symbolic link to ``../../configs``, whatever the command: an editable install
    (``pip install -e .``) sees the checkout's configs as they are edited, and a wheel
    (``pip install .``, ``pip wheel .``) holds a real copy, because setuptools copies the files
    the link points to (``package_data``). So the checkout never holds a stale copy, whichever
    install was last. Where a symbolic link cannot be made (Windows without developer mode) it
    is a copy, refreshed on every run of this file. Also writes ``.mim/model-index.yml``
    (see :data:`MODEL_INDEX`). Without ``configs/`` (not a checkout or sdist) nothing changes.
    """
    src = osp.join(ROOT, 'configs')
    if not osp.isdir(src):
        return
    mim = osp.join(ROOT, MIM_DIR)
    os.makedirs(mim, exist_ok=True)
    with open(osp.join(mim, 'model-index.yml'), 'w', encoding='utf-8') as f:
        f.write(MODEL_INDEX)
    dst = osp.join(mim, 'configs')
    target = osp.relpath(src, mim)  # ../../configs
    if osp.islink(dst) and os.readlink(dst) == target:
        return
    if osp.islink(dst) or osp.isfile(dst):
        os.remove(dst)
    elif osp.isdir(dst):
        shutil.rmtree(dst)
    try:
        os.symlink(target, dst, target_is_directory=True)
    except OSError:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.py[cod]'))


if __name__ == '__main__':
    add_mim_extension()
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
        # The shipped configs (a symbolic link in the checkout: the wheel gets the files).
        package_data={
            'mmdopq': [
                '.mim/model-index.yml',
                *(f'.mim/configs/**/{pattern}' for pattern in CONFIG_FILE_PATTERNS),
            ]
        },
        entry_points={
            'console_scripts': ['mmdopq-quantize = mmdopq.apis.quantize_cli:main'],
        },
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
