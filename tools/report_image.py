"""docs/report.png, the README's image: four of the report's figures in one PNG.

    python -m fastconv --report /tmp/rep && python tools/report_image.py /tmp/rep docs/report.png

Top: a correctly classified test digit, its occlusion map and its saliency map
(the first row of maps_correctly.png), and the first layer's filters; bottom: the
top-activating receptive fields of the last conv block and the t-SNE of the
penultimate codes.
"""
import argparse

import matplotlib.image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="the directory python -m fastconv --report wrote")
    parser.add_argument("out", help="the PNG to write")
    args = parser.parse_args(argv)
    maps = mpimg.imread(f"{args.report}/maps_correctly.png")
    panels = [("occlusion and saliency of a test digit", maps[: maps.shape[0] // 3]),
              ("first layer's filters", mpimg.imread(f"{args.report}/filters.png")),
              ("receptive fields that excite four units of the last conv block most",
               mpimg.imread(f"{args.report}/top_1.png")),
              ("t-SNE of the penultimate codes", mpimg.imread(f"{args.report}/tsne.png"))]
    fig = Figure(figsize=(10, 5.4))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 2, width_ratios=[3.3, 1.2], height_ratios=[1, 1.1])
    for k, (title, image) in enumerate(panels):
        ax = fig.add_subplot(grid[k // 2, k % 2])
        ax.imshow(image, interpolation="lanczos")
        ax.set_axis_off()
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.03, hspace=0.12)
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
