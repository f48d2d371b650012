"""Generate mmdopq's deterministic synthetic datasets and print a JSON summary.

Examples (from the repository root)::

    # COCO-format instance segmentation (mmdet CocoDataset), 320 px, hard
    python -m benchmarks.reference.make_data coco --out data/synthetic_coco \\
        --num-train 400 --num-val 100 --img-size 320 --seed 0

    # ImageFolder classification, 12 shape x texture classes, 64 px (counts are per class)
    python -m benchmarks.reference.make_data cls --out data/synthetic_cls \\
        --num-train 200 --num-val 50 --img-size 64

An existing set generated with the same arguments is reused; ``--force`` regenerates it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Optional

from .synthetic import CLASSES, generate_coco_shapes, generate_shapes_classification


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (Sequence[str], optional): Arguments; ``sys.argv[1:]`` if None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Generate deterministic synthetic datasets.')
    parser.add_argument(
        'kind',
        choices=('coco', 'cls'),
        help='coco: instance segmentation (COCO json); cls: ImageFolder',
    )
    parser.add_argument('--out', required=True, help='output root directory')
    parser.add_argument(
        '--num-train',
        type=int,
        default=None,
        help='training images (per class for cls); default 400 / 200',
    )
    parser.add_argument(
        '--num-val',
        type=int,
        default=None,
        help='validation images (per class for cls); default 100 / 50',
    )
    parser.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        default=None,
        help='side, or width height (coco only); default 320 / 64',
    )
    parser.add_argument('--seed', type=int, default=0, help='dataset seed')
    parser.add_argument(
        '--difficulty',
        choices=('easy', 'medium', 'hard', 'faint'),
        default='hard',
        help='hard (default); coco: medium (the reference detectors), faint (half of the '
        'shapes camouflaged) or easy; cls: easy (the reference ViT) or faint (the reference '
        'Swin classifier); medium is coco only',
    )
    parser.add_argument(
        '--min-instances',
        type=int,
        default=None,
        help='coco only: fewest shapes per image (default from difficulty)',
    )
    parser.add_argument(
        '--max-instances',
        type=int,
        default=None,
        help='coco only: most shapes per image (default from difficulty)',
    )
    parser.add_argument(
        '--classes',
        nargs='+',
        default=list(CLASSES),
        help=f'coco only: shape classes, a subset of {list(CLASSES)}',
    )
    parser.add_argument('--force', action='store_true', help='regenerate even if up to date')
    args = parser.parse_args(argv)
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        parser.error('--img-size takes a side or width height')
    if args.kind == 'cls' and args.img_size is not None and len(args.img_size) != 1:
        parser.error('--img-size of cls images is a single side')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Generate the requested dataset and print its summary as JSON.

    Args:
        argv (Sequence[str], optional): Arguments; ``sys.argv[1:]`` if None.

    Returns:
        dict: The generator's summary.
    """
    args = parse_args(argv)
    if args.kind == 'coco':
        size = args.img_size or [320]
        summary = generate_coco_shapes(
            args.out,
            num_train=400 if args.num_train is None else args.num_train,
            num_val=100 if args.num_val is None else args.num_val,
            img_size=size[0] if len(size) == 1 else (size[0], size[1]),
            seed=args.seed,
            min_instances=args.min_instances,
            max_instances=args.max_instances,
            classes=args.classes,
            difficulty=args.difficulty,
            force=args.force,
        )
    else:
        summary = generate_shapes_classification(
            args.out,
            num_train_per_class=200 if args.num_train is None else args.num_train,
            num_val_per_class=50 if args.num_val is None else args.num_val,
            img_size=(args.img_size or [64])[0],
            seed=args.seed,
            difficulty=args.difficulty,
            force=args.force,
        )
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == '__main__':
    main()
