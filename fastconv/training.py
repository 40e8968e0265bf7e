"""The main job: train a small LeNet-style CNN on scikit-learn's 8x8 digits.

``python -m fastconv`` runs `main`: load the 1,797 handwritten digits, train
conv -> ReLU -> pool -> conv -> ReLU -> pool -> linear with Adam and a tqdm progress
bar per epoch (on a terminal), report the test accuracy and the training speed, then time the
same training step with the layers running on the pure-NumPy reference ops
(`fastconv.reference`) for comparison.
"""
import shutil
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastconv
from fastconv import reference
from fastconv.layers import Conv2D, Flatten, Linear, MaxPool2D, ReLU, Sequential
from fastconv.nn.losses import softmax_cross_entropy
from fastconv.nn.optim import Adam


class MissingScikitLearn(ImportError):
    """scikit-learn, which holds the digits data set, is not installed."""


MISSING_SKLEARN = (
    "The digits data set comes with scikit-learn, which is not installed.\n"
    "Install the examples extra:   pip install \".[examples]\"   (or: pip install scikit-learn)"
)


def load_digits(test_fraction=0.2, seed=0, dtype=np.float32):
    """scikit-learn's 8x8 digits as ``(x_train, y_train, x_test, y_test)``.

    Images are (N, 1, 8, 8) scaled to [0, 1]; labels are int64 in 0..9. The
    split is a random permutation drawn with `seed` (not stratified). Raises `MissingScikitLearn` (an ImportError) with
    install instructions when scikit-learn is missing.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise MissingScikitLearn(MISSING_SKLEARN) from error
    digits = sklearn_digits()
    x = (digits.images / 16.0).astype(dtype)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def lenet(num_classes=10, channels=(16, 32), rng=None, dtype=np.float32):
    """conv3x3 -> ReLU -> maxpool2 -> conv3x3 -> ReLU -> maxpool2 -> linear, for (N, 1, 8, 8) input."""
    rng = np.random.default_rng(rng)
    c1, c2 = channels
    return Sequential(
        Conv2D(1, c1, 3, padding=1, dtype=dtype, rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(c1, c2, 3, padding=1, dtype=dtype, rng=rng), ReLU(), MaxPool2D(2),
        Flatten(), Linear(c2 * 2 * 2, num_classes, dtype=dtype, rng=rng),
    )


def train_step(model, optimizer, x, y):
    """One forward, backward and update on a batch; returns the loss."""
    loss, grad = softmax_cross_entropy(model.forward(x, training=True), y)
    model._backward_params(grad)     # the parameters' gradients; none for the batch
    optimizer.step()
    return loss


def accuracy(model, x, y, batch_size=256):
    """Fraction of `x` whose highest-scoring class is `y`."""
    if len(y) == 0:
        return float("nan")
    correct = 0
    for i in range(0, len(y), batch_size):
        scores = model.forward(x[i:i + batch_size], training=False)
        correct += int((scores.argmax(axis=1) == y[i:i + batch_size]).sum())
    return correct / len(y)


def _progress_bar(total, label, stream, progress):
    """A tqdm bar for one epoch, drawn on `stream` when it is a terminal; None when
    `progress` is false, `stream` is not a terminal (logs, pipes, tests) or tqdm is
    not installed (it comes with the examples extra)."""
    if not progress or not getattr(stream, "isatty", lambda: False)():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # the terminal's width, or 100 columns where it reports none (tqdm would draw nothing)
    width = shutil.get_terminal_size((100, 24)).columns
    return tqdm(total=total, desc=label, file=stream, leave=True, unit="batch", ncols=width)


def train(model, x, y, epochs=10, batch_size=32, lr=3e-3, seed=0, x_test=None, y_test=None, stream=None,
          progress=True):
    """Train `model` with Adam on (x, y), shuffling with `seed` every epoch.

    Each epoch ends with a line on `stream` (default: standard error) giving its
    mean loss, and its test accuracy when `x_test` is given; on a terminal a
    tqdm progress bar shows the running loss while the epoch runs (``progress=False``
    turns it off). Evaluation is not timed.

    Returns
    -------
    dict with ``images`` (images trained on), ``step_seconds`` (the time of
    every training step: forward, loss, backward and update), ``loss`` (the
    mean training loss of each epoch) and ``test_accuracy`` (per epoch; empty
    without `x_test`).
    """
    stream = sys.stderr if stream is None else stream
    rng = np.random.default_rng(seed)
    optimizer = Adam(model, lr=lr)
    n_batches = -(-len(y) // batch_size)
    step_seconds, images = [], 0
    history = {"loss": [], "test_accuracy": []}
    for epoch in range(epochs):
        label = f"epoch {epoch + 1:>{len(str(epochs))}}/{epochs}"
        bar = _progress_bar(n_batches, label, stream, progress)
        order = rng.permutation(len(y))
        loss_sum = 0.0
        for b in range(n_batches):
            batch = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = x[batch], y[batch]
            start = time.perf_counter()
            loss_sum += train_step(model, optimizer, xb, yb)
            step_seconds.append(time.perf_counter() - start)
            images += len(batch)
            if bar is not None:
                bar.set_postfix_str(f"loss {loss_sum / (b + 1):.4f}", refresh=False)
                bar.update(1)
        text = f"loss {loss_sum / n_batches:.4f}"
        history["loss"].append(float(loss_sum / n_batches))
        if x_test is not None:
            history["test_accuracy"].append(accuracy(model, x_test, y_test))
            text += f"  test accuracy {history['test_accuracy'][-1]:.2%}"
        if bar is not None:
            bar.set_postfix_str(text)       # the finished bar stays as the epoch's line
            bar.close()
        else:
            stream.write(f"{label}  {n_batches}/{n_batches} batches  {text}\n")
            stream.flush()
    return dict(images=images, step_seconds=step_seconds, **history)


def step_seconds(model, x, y, steps=5, lr=3e-3):
    """Median seconds of a training step of `model` on the batch (x, y), over
    `steps` steps after one warm-up step (the model is updated by them)."""
    optimizer = Adam(model, lr=lr)
    train_step(model, optimizer, x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(model, optimizer, x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(epochs=10, batch_size=32, threads=None, seed=0, lr=3e-3, reference_steps=5, out=print, stream=None,
         progress=True):
    """Train on the digits, print accuracy and speed; returns a dict of the figures.

    The dict also holds the trained ``model``, its ``history`` (``loss`` and
    ``test_accuracy`` per epoch) and the test set ``x_test``, ``y_test``
    (what ``python -m fastconv --report DIR`` draws). `stream` and `progress`
    are as in `train`.

    Raises `MissingScikitLearn` when scikit-learn is not installed.
    """
    if threads is not None:
        fastconv.set_num_threads(threads)
    x_train, y_train, x_test, y_test = load_digits(seed=seed)
    # NumPy's own matmuls (the Linear layer, the reference ops) get the same
    # thread count as fastconv's kernels, so the comparison is like for like.
    with threadpool_limits(limits=fastconv.get_num_threads(), user_api="blas"):
        return _run(x_train, y_train, x_test, y_test, epochs, batch_size, seed, lr, reference_steps, out, stream,
                    progress)


def _run(x_train, y_train, x_test, y_test, epochs, batch_size, seed, lr, reference_steps, out, stream, progress):
    threads = fastconv.get_num_threads()
    model = lenet(rng=seed)
    out(f"fastconv {fastconv.__version__}: training a LeNet-style CNN on scikit-learn's 8x8 digits "
        f"({len(y_train)} training, {len(y_test)} test images), {threads} thread{'s' if threads > 1 else ''}")
    out(f"{model.num_params():,} parameters, batch size {batch_size}, {epochs} epochs, Adam lr {lr}")
    stats = train(model, x_train, y_train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  x_test=x_test, y_test=y_test, stream=stream, progress=progress)
    seconds, images = sum(stats["step_seconds"]), stats["images"]
    acc = accuracy(model, x_test, y_test)
    rate = images / seconds if seconds else float("nan")
    out(f"test accuracy: {acc:.2%} ({round(acc * len(y_test))}/{len(y_test)})")
    out(f"training speed: {rate:,.0f} images/s ({images:,} images in {seconds:.2f} s of training steps)")
    result = dict(accuracy=acc, images_per_second=rate, train_seconds=seconds)
    result.update(model=model, history={"loss": stats["loss"], "test_accuracy": stats["test_accuracy"]},
                  x_test=x_test, y_test=y_test)
    if reference_steps:
        # The same step (batch size, weights, data) with the layers on the
        # pure-NumPy reference ops; compared with the median fastconv step above.
        n = min(batch_size, len(y_train))
        fast = statistics.median(stats["step_seconds"][:-1] or stats["step_seconds"])  # the last batch may be short
        slow = step_seconds(lenet(rng=seed).set_backend(reference), x_train[:n], y_train[:n],
                            steps=reference_steps, lr=lr)
        out(f"median training step, batch {n}: fastconv layers {fast * 1e3:.2f} ms ({n / fast:,.0f} images/s), "
            f"pure-NumPy reference layers {slow * 1e3:.1f} ms ({n / slow:,.0f} images/s): "
            f"{slow / fast:.1f}x speed-up")
        result.update(step_images_per_second=n / fast, reference_images_per_second=n / slow, speedup=slow / fast)
    return result
