"""`python -m fastconv`: the main job (see README)."""
import argparse
import statistics
import sys
import time

import numpy as np


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def speed_table(repeats=5):
    """conv2d against the NumPy reference on a few shapes, measured in this process."""
    import fastconv
    from fastconv import reference

    rng = np.random.default_rng(0)
    cases = [  # name, (N, C, H=W, K, kernel, stride, pad)
        ("C1", (64, 3, 32, 32, 3, 1, 1)),
        ("C2", (8, 64, 56, 64, 3, 1, 1)),
        ("C5", (8, 256, 28, 512, 1, 1, 0)),
    ]
    print(f"\nconv2d float32 forward, median of {repeats}, {fastconv.get_num_threads()} threads")
    print(f"{'case':6}{'shape (N,C,H,K,k,s,p)':28}{'fastconv':>12}{'reference':>12}{'speed-up':>10}")
    for name, (N, C, H, K, k, s, p) in cases:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((K, C, k, k), dtype=np.float32)
        fast = _median_time(lambda: fastconv.conv2d(x, w, stride=s, padding=p), repeats)
        slow = _median_time(lambda: reference.conv2d(x, w, stride=s, padding=p), max(1, repeats // 2))
        print(f"{name:6}{str((N, C, H, K, k, s, p)):28}{fast * 1e3:10.2f}ms{slow * 1e3:10.1f}ms{slow / fast:9.1f}x")


def main(argv=None):
    import fastconv

    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__)
    parser.add_argument("--threads", type=int, default=None, help="number of threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    fastconv.show_config()
    speed_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
