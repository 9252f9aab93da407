"""Print the kernel's speed side by side: the pure NumPy kernel and the fused numba path.

Ratios measured in one run mean something on a shared machine; absolute times do not.

    .venv/bin/python asv_bench/compare.py [--size 1048576] [--repeat 20]
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

import padam_core
from padam_core import fused_cpu

BYTES_PER_ELEMENT = 36  # float32: read theta, g, m, v, v_hat; write theta, m, v, v_hat


def best_seconds(function, repeat: int) -> float:
    return min(timeit.repeat(function, number=1, repeat=repeat))


def copy_bandwidth(size: int, repeat: int) -> float:
    """GB/s of np.copyto (one thread) moving as many bytes as a step: a yardstick."""
    source = np.ones(size * BYTES_PER_ELEMENT // 8, np.float32)  # read 18 B, write 18 B
    target = np.empty_like(source)
    return size * BYTES_PER_ELEMENT / best_seconds(lambda: np.copyto(target, source), repeat) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2**20)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=args.size).astype(np.float32) for _ in range(5)]
    arrays[3], arrays[4] = np.abs(arrays[3]), np.abs(arrays[4]) * 1.5
    copy = copy_bandwidth(args.size, args.repeat)
    print(f"{args.size} float32 elements, 36 B moved per element; np.copyto: {copy:.1f} GB/s")
    print(f"{'variant':<10} {'partial':>7} {'pure ms':>8} {'fused ms':>9} {'pure/fused':>10} "
          f"{'fused GB/s':>10}")  # fmt: skip
    for variant in padam_core.VARIANTS:
        for partial in (0.125, 0.5, 0.3):
            hyper = {"variant": variant, "partial": partial}
            pure = best_seconds(
                lambda h=hyper: padam_core.padam_step(*arrays, 10, **h), args.repeat
            )
            row = f"{variant:<10} {partial:>7} {pure * 1e3:>8.2f}"
            if fused_cpu.available():
                copies = [a.copy() for a in arrays]

                def run(h=hyper, c=copies):
                    fused_cpu.padam_step_inplace(*c, 10, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, **h)

                run()  # compile
                fused = best_seconds(run, args.repeat)
                bandwidth = args.size * BYTES_PER_ELEMENT / fused / 1e9
                row += f" {fused * 1e3:>9.2f} {pure / fused:>10.2f} {bandwidth:>10.1f}"
            print(row)


if __name__ == "__main__":
    main()
