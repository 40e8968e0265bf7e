"""``python -m fastconv --report DIR``: an offline HTML report on a trained classifier.

`write` draws, with `fastconv.viz`, the training curves, the confusion matrix,
the first layer's filters, activation maps, dead filters, the test images that
excite some units most, occlusion and saliency maps of correctly and wrongly
classified images and a t-SNE of the penultimate codes, as PNG files beside an
``index.html`` that links them by relative path (no network, no scripts).
"""
import html
import os

import numpy as np

from fastconv import viz

__all__ = ["write"]


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, directory, name):
    fig.tight_layout()
    fig.savefig(os.path.join(directory, name), dpi=90)
    return name


def _predict(model, x, batch_size=512):
    return np.concatenate([model.forward(x[i:i + batch_size], training=False)
                           for i in range(0, len(x), batch_size)]).argmax(axis=1)


def _history_png(history, directory):
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig = _figure(8, 3)
    loss, acc = fig.subplots(1, 2)
    loss.plot(epochs, history["loss"], marker="o")
    loss.set(xlabel="epoch", ylabel="mean training loss", title="loss")
    if history.get("test_accuracy"):
        acc.plot(epochs, history["test_accuracy"], marker="o", color="tab:green")
    acc.set(xlabel="epoch", ylabel="test accuracy", title="accuracy")
    return _save(fig, directory, "history.png")


def _confusion_png(y, predicted, num_classes, directory):
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (y, predicted), 1)
    fig = _figure(5, 4.5)
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    for (i, j), c in np.ndenumerate(counts):
        if c:
            ax.text(j, i, str(c), ha="center", va="center", fontsize=7,
                    color="white" if c > counts.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true label", title="confusion matrix (test set)",
           xticks=range(num_classes), yticks=range(num_classes))
    return _save(fig, directory, "confusion.png")


def _activations_png(model, x, directory):
    named = [(n, a) for n, a in viz.activations(model, x) if a.ndim == 4]
    fig = _figure(2.2 * (len(named) + 1), 2.3 * len(x))
    axes = fig.subplots(len(x), len(named) + 1, squeeze=False)
    for row, image in enumerate(x):
        axes[row, 0].imshow(viz._image_for_display(image), cmap="gray", interpolation="nearest")
        axes[row, 0].set_axis_off()
        axes[row, 0].set_title("input", fontsize=8)
        for col, (name, a) in enumerate(named, start=1):
            viz.plot_activations(a[row], ax=axes[row, col])
            axes[row, col].set_title(f"layer {name}", fontsize=8)
    return _save(fig, directory, "activations.png")


def _top_png(model, x, layer, channels, directory, name):
    fig = _figure(2.4 * len(channels), 2.6)
    axes = fig.subplots(1, len(channels), squeeze=False)[0]
    for ax, channel in zip(axes, channels):
        _, crops = viz.top_activating(model, x, layer, int(channel), k=9)
        viz.plot_top_activating(crops, ax=ax, title=f"layer {layer}, channel {channel}")
    return _save(fig, directory, name)


def _maps_png(model, x, y, predicted, directory, name):
    heat = viz.occlusion(model, x, y, patch=max(1, x.shape[2] // 4), stride=1)
    grads = viz.saliency(model, x, y)
    fig = _figure(7.5, 2.4 * len(x))
    axes = fig.subplots(len(x), 3, squeeze=False)
    for row in range(len(x)):
        viz.plot_occlusion(heat[row], ax=axes[row, :2], image=x[row],
                           title=f"P(label {y[row]}), patch occluded")
        axes[row, 0].set_title(f"label {y[row]}, predicted {predicted[row]}", fontsize=9)
        viz.plot_saliency(grads[row], ax=axes[row, 2], title="saliency")
    return _save(fig, directory, name)


def write(directory, model, x_test, y_test, history=None, *, examples=3, seed=0, tsne_points=600):
    """Write ``index.html`` and its PNG figures into `directory` (created if missing).

    Parameters
    ----------
    directory : str or os.PathLike
    model : Sequential
        A trained classifier: (N, C, H, W) images -> (N, num_classes) scores,
        whose first layer with a 4-D weight is its first convolution.
    x_test : ndarray, (N, C, H, W)
    y_test : ndarray of int, (N,)
    history : dict, optional
        ``loss`` and ``test_accuracy`` per epoch, as `fastconv.training.main`
        returns them.
    examples : int
        How many images the activation, occlusion and saliency figures show.
    seed : int
        Seed of the t-SNE and of the choice of its points.
    tsne_points : int
        At most this many test images go into the t-SNE (it is quadratic).

    Returns
    -------
    str
        The path of ``index.html``.
    """
    import matplotlib

    # A fixed title height: matplotlib otherwise measures every axis' ticks to place
    # each title (a third of the report's drawing time for its grids of images).
    with matplotlib.rc_context({"axes.titley": 1.0}):
        return _write(directory, model, x_test, y_test, history, examples, seed, tsne_points)


def _write(directory, model, x_test, y_test, history, examples, seed, tsne_points):
    x_test = viz._images(x_test, "x_test")
    y_test = np.asarray(y_test)
    if y_test.shape != (len(x_test),) or y_test.dtype.kind not in "iu":
        raise ValueError(f"y_test must hold one int label per image ({len(x_test)}), "
                         f"got {y_test.dtype} of shape {y_test.shape}")
    if len(x_test) == 0:
        raise ValueError("x_test is empty")
    os.makedirs(directory, exist_ok=True)
    names = viz._named_layers(model)
    predicted = _predict(model, x_test)
    num_classes = int(model.forward(x_test[:1], training=False).shape[1])
    sections = []  # (title, text, png or None)

    if history and history.get("loss"):
        sections.append(("Training", f"{len(history['loss'])} epochs.", _history_png(history, directory)))
    acc = float((predicted == y_test).mean())
    sections.append(("Confusion matrix", f"Test accuracy {acc:.2%} on {len(y_test)} images.",
                     _confusion_png(y_test, predicted, max(num_classes, int(y_test.max()) + 1), directory)))

    first = next((n for n, layer in names if np.ndim(getattr(layer, "params", {}).get("weight")) == 4), None)
    if first is not None:
        weight = dict(names)[first].params["weight"]
        png = viz.plot_filters(weight, path=os.path.join(directory, "filters.png"), title=f"layer {first}")
        text = f"Layer {first}: weights of shape {weight.shape}, each filter scaled to its own range."
        sections.append(("First layer's filters", text, os.path.basename(png)))

    # One image of each of the first labels, so the rows differ.
    shown = np.sort(np.unique(y_test, return_index=True)[1])[:examples]
    text = f"The outputs of the spatial layers for {len(shown)} test images (each map scaled to its own range)."
    sections.append(("Activation maps", text, _activations_png(model, x_test[shown], directory)))

    dead = viz.dead_filters(model, x_test)
    channels = {n: a.shape[1] for n, a in viz.activations(model, x_test[:1])}
    n_dead = sum(len(d) for d in dead.values())
    if n_dead:
        text = "Channels never positive on the test set: " + "; ".join(
            f"layer {n}: {d.tolist()}" for n, d in dead.items() if len(d)) + "."
        png = os.path.basename(viz.plot_dead_filters(dead, channels, path=os.path.join(directory, "dead.png")))
    else:
        text, png = "No conv or ReLU channel is dead on the test set.", None
    sections.append(("Dead filters", text, png))

    outputs = dict(viz.activations(model, x_test))
    relus = [n for n, layer in names if type(layer).__name__ == "ReLU" and outputs[n].ndim == 4]
    for i, layer in enumerate(relus[:1] + relus[-1:] if len(relus) > 1 else relus):
        # The most active channels on average: dead ones have nothing to show.
        mean = outputs[layer].mean(axis=(0, 2, 3))
        channels_shown = np.argsort(-mean, kind="stable")[:4]
        sections.append((f"Top-activating test images, layer {layer}",
                         "For each unit, the receptive fields of the 9 test images where it is largest.",
                         _top_png(model, x_test, layer, channels_shown, directory, f"top_{i}.png")))

    # Correctly classified digits of different labels, so the rows differ.
    right = np.flatnonzero(predicted == y_test)
    right = np.sort(right[np.unique(y_test[right], return_index=True)[1]])[:examples]
    wrong = np.flatnonzero(predicted != y_test)[:examples]
    text = ("Probability of the true label with a patch of zeros at each position "
            "(low: the model needs what it hides), and |d score / d pixel|.")
    for kind, chosen in (("correctly", right), ("wrongly", wrong)):
        if len(chosen):
            sections.append((f"Occlusion and saliency, {kind} classified", text,
                             _maps_png(model, x_test[chosen], y_test[chosen], predicted[chosen], directory,
                                       f"maps_{kind}.png")))

    if len(names) >= 2:
        penultimate = names[-2][0]
        pick = np.random.default_rng(seed).permutation(len(x_test))[:tsne_points]
        points = viz.embed(model, x_test[pick], penultimate, method="tsne", random_state=seed)
        png = viz.plot_embedding(points, y_test[pick], path=os.path.join(directory, "tsne.png"),
                                 title=f"t-SNE of layer {penultimate}'s codes")
        sections.append(("t-SNE of the penultimate codes",
                         f"Outputs of layer {penultimate} for {len(pick)} test images, coloured by label.",
                         os.path.basename(png)))

    body = "\n".join(
        f"<section><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>"
        + (f'<img src="{html.escape(png)}" alt="{html.escape(title)}">' if png else "") + "</section>"
        for title, text, png in sections)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>fastconv report</title><style>body{font-family:sans-serif;max-width:60em;margin:auto;"
            "padding:1em}img{max-width:100%}section{margin-bottom:2em}</style></head><body>\n"
            f"<h1>fastconv report</h1><p>{html.escape(type(model).__name__)} with {len(names)} layers, "
            f"{len(x_test)} test images.</p>\n{body}\n</body></html>\n")
    path = os.path.join(directory, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
