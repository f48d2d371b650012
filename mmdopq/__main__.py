"""``python -m mmdopq quantize CONFIG CHECKPOINT [options]``: the installed quantization tool."""

import sys

COMMANDS = ('quantize',)


def main(argv=None) -> int:
    """Dispatch ``python -m mmdopq <command> ...``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        print(
            'usage: python -m mmdopq quantize CONFIG CHECKPOINT [options]\n'
            '       (python -m mmdopq quantize --help for the options)',
            file=sys.stderr,
        )
        return 0 if argv[:1] in (['-h'], ['--help']) else 2
    from mmdopq.apis.quantize_cli import main as quantize_main

    quantize_main(argv[1:])
    return 0


if __name__ == '__main__':
    sys.exit(main())
