"""tools/analysis/plot_quantizers.py: the function, the CLI and the input validation."""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import matplotlib  # noqa: F401  (a runtime requirement: never skip these tests)
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'analysis' / 'plot_quantizers.py'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
NAMES = {'UniformQuantizer', 'LogSqrt2Quantizer', 'TanQuantizer'}


@pytest.fixture(scope='module')
def tool() -> ModuleType:
    """The script imported as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('plot_quantizers', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path: Path) -> None:
    """``path`` is a decodable PNG of non-trivial size."""
    import matplotlib.image as mpimg

    assert path.is_file(), f'{path} was not written'
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 300
    assert float(image.std()) > 0.0  # not a blank canvas


def no_files_written(directory: Path) -> bool:
    """No PNG and no leftover temporary file in ``directory``."""
    return not any(p.is_file() for p in directory.iterdir())


def test_plot_function_returns_errors_and_writes_png(tool, tmp_path):
    x = tool.synthetic_attention('t', heads=2, tokens=16, seed=0)
    out = tmp_path / 'sub' / 'fig.png'
    errors = tool.plot_quantizers(x, 3, str(out), title='unit test')
    assert set(errors) == NAMES
    assert all(math.isfinite(e) and e >= 0.0 for e in errors.values())
    assert_png(out)
    # Only the PNG is left: the temporary file was renamed, not copied.
    assert [p.name for p in out.parent.iterdir()] == ['fig.png']


def test_synthetic_samples_are_seeded_softmax_maps(tool):
    for kind in ('t', 'gauss'):
        a = tool.synthetic_attention(kind, heads=3, tokens=7, seed=1)
        b = tool.synthetic_attention(kind, heads=3, tokens=7, seed=1)
        assert a.shape == (3, 7, 7)
        assert torch.equal(a, b)
        assert torch.allclose(a.sum(-1), torch.ones(3, 7), atol=1e-5)
    with pytest.raises(ValueError, match='unknown synthetic kind'):
        tool.synthetic_attention('cauchy', heads=1, tokens=4)


def test_cli_synthetic_in_process(tool, tmp_path, capsys):
    out = tmp_path / 'cli.png'
    argv = [
        '--synthetic',
        'gauss',
        '--tokens',
        '16',
        '--heads',
        '2',
        '--bits',
        '4',
        '--seed',
        '3',
        '--out',
        str(out),
    ]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in NAMES)
    assert_png(out)


def test_cli_saved_tensor_subprocess(tool, tmp_path):
    x = tool.synthetic_attention('t', heads=2, tokens=12, seed=0)
    src = tmp_path / 'attn.pt'
    torch.save(x, src)
    out = tmp_path / 'from_file.png'
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(REPO)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])
        ),
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), '--input', str(src), '--bits', '3', '--out', str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert 'TanQuantizer' in proc.stdout
    assert_png(out)


def test_missing_file_is_a_clear_error(tool, tmp_path, capsys):
    missing = tmp_path / 'nope.pt'
    with pytest.raises(FileNotFoundError, match='nope.pt'):
        tool.load_tensor(str(missing))
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    with pytest.raises(SystemExit) as exc:
        tool.main(['--input', str(missing), '--out', str(out_dir / 'fig.png')])
    assert exc.value.code == 2
    assert 'nope.pt' in capsys.readouterr().err
    assert no_files_written(out_dir)


@pytest.mark.parametrize(
    'bad, message',
    [
        (torch.tensor([[0.2, 1.5], [0.0, 0.3]]), r'must lie in \[0, 1\]'),
        (torch.tensor([[-0.1, 0.5]]), r'must lie in \[0, 1\]'),
        (torch.tensor([0.5, float('nan')]), 'NaN'),
        ({'attn': torch.rand(3)}, 'expected a torch.Tensor'),
        (torch.empty(0), 'empty'),
    ],
)
def test_invalid_tensor_is_a_clear_error(tool, tmp_path, capsys, bad, message):
    src = tmp_path / 'bad_input.pt'
    torch.save(bad, src)
    with pytest.raises(ValueError, match=message) as exc:
        tool.load_tensor(str(src))
    assert 'bad_input.pt' in str(exc.value)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--input', str(src), '--out', str(out_dir / 'fig.png')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'bad_input.pt' in err and 'error' in err
    assert no_files_written(out_dir)


def test_unreadable_file_is_a_clear_error(tool, tmp_path):
    src = tmp_path / 'garbage.pt'
    src.write_bytes(b'not a torch file')
    with pytest.raises(ValueError, match='garbage.pt'):
        tool.load_tensor(str(src))


def test_function_rejects_out_of_range_tensor(tool, tmp_path):
    out = tmp_path / 'fig.png'
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        tool.plot_quantizers(torch.tensor([0.5, 2.0]), 4, str(out))
    with pytest.raises(ValueError, match='bits'):
        tool.plot_quantizers(torch.tensor([0.5, 0.25]), 16, str(out))
    assert not out.exists()
