"""Speed figures for every registered mechanism on this machine: `make bench`.

Timings depend on the machine and its load, so they live here and never in the tests.
Prints parameters, counted FLOPs and the median time of one forward+backward pass
for each mechanism at a few ResNet-like shapes, next to a 3x3 convolution of the same width
for scale.
"""

from __future__ import annotations

import argparse
import platform

import torch
from torch import nn

import attncourse
from attncourse.cost import measure, time_forward_backward

SHAPES = [(8, 64, 56, 56), (8, 256, 28, 28), (8, 512, 14, 14)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", nargs="*", default=None, help="mechanism names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only or attncourse.available()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"median of {args.repeats} forward+backward passes\n")
    print(f"{'module':<10} {'input (B, C, H, W)':<22} {'params':>10} {'MFLOPs':>10} {'ms':>9} {'ms 3x3 conv':>12}")
    for shape in SHAPES:
        x = torch.randn(shape)
        conv = nn.Conv2d(shape[1], shape[1], 3, padding=1, bias=False)
        t_conv = time_forward_backward(conv, x, repeats=args.repeats)
        for name in names:
            c = measure(attncourse.create(name, shape[1]), x, repeats=args.repeats)
            print(f"{name:<10} {str(shape):<22} {c.parameters:>10,} {c.flops / 1e6:>10.2f} "
                  f"{1e3 * c.seconds:>9.2f} {1e3 * t_conv:>12.2f}")
        print()


if __name__ == "__main__":
    main()
