"""python -m fastconv: the main job.

  python -m fastconv            train a LeNet-style CNN on scikit-learn's 8x8 digits with
                                fastconv's layers: progress bar, test accuracy, images/s and
                                the speed-up over the same layers on the pure-NumPy reference ops
                                (needs scikit-learn: pip install ".[examples]")
  python -m fastconv --report DIR
                                the same, then write DIR/index.html: training curves, filters,
                                activations, occlusion, saliency, t-SNE (needs matplotlib: ".[viz]")
  python -m fastconv config     show the build and runtime configuration
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
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, weights and shuffling (default: 0)")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="after training, write an HTML report with figures into DIR")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("config", help="show the build and runtime configuration")
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
    elif args.command == "config":
        fastconv.show_config()
    else:
        from fastconv import training

        for name in ("epochs", "batch_size"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        try:
            result = training.main(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        except training.MissingScikitLearn as error:
            print(error, file=sys.stderr)
            return 1
        if args.report is not None:
            from fastconv import report

            path = report.write(args.report, result["model"], result["x_test"], result["y_test"],
                                result["history"], seed=args.seed)
            print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
