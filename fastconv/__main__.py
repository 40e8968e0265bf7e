"""python -m fastconv: the main job.

  python -m fastconv            show the configuration and a quick conv2d speed table
  python -m fastconv bench      the full one-run comparison report (reference, torch)
  python -m fastconv bench --scaling 1 2
                                fastconv at 1 and 2 threads: the thread speed-up of every op
"""
import argparse
import sys


def main(argv=None):
    import fastconv
    from fastconv import bench

    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="number of threads (default: all cores)")
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("bench", help="one-run comparison report against the reference and torch")
    b.add_argument("--sections", nargs="*", choices=list(bench.SECTIONS), default=None)
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument("--dtypes", nargs="*", default=["float32", "float64"], choices=["float32", "float64"])
    b.add_argument("--no-reference", action="store_true", help="skip the (slow) NumPy reference")
    b.add_argument("--scaling", nargs=2, type=int, metavar=("LO", "HI"), default=None,
                   help="instead: time fastconv at LO and HI threads and report the speed-up (e.g. 1 2)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    if args.command == "bench" and args.scaling:
        bench.run_scaling(args.sections, args.repeats, counts=tuple(args.scaling), dtypes=args.dtypes)
    elif args.command == "bench":
        bench.run(args.sections, args.repeats, with_reference=not args.no_reference, dtypes=args.dtypes)
    else:
        fastconv.show_config()
        print()
        bench.run(["conv"], repeats=3, dtypes=["float32"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
