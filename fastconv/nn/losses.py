"""Losses that return the loss and its gradient with respect to their input,
ready to feed ``model.backward``. Both average over the batch."""
import numpy as np

from fastconv import _validation as v

__all__ = ["softmax_cross_entropy", "binary_log_loss"]


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of ``softmax(logits)`` against integer class labels.

    Parameters
    ----------
    logits : ndarray, shape (N, K), float32 or float64
        Unnormalised class scores.
    labels : array of ints, shape (N,)
        Class indices in ``[0, K)``.

    Returns
    -------
    loss : float
        ``-mean(log(softmax(logits)[n, labels[n]]))`` (0.0 for an empty batch).
    grad_logits : ndarray, shape (N, K), dtype of `logits`
        ``(softmax(logits) - onehot(labels)) / N``.
    """
    logits = v.float_array(logits, "logits", ndim=2)
    labels = class_labels(labels, *logits.shape, "logits")
    N = logits.shape[0]
    if N == 0:
        return 0.0, np.zeros_like(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(N)
    loss = -float(log_probs[rows, labels].mean(dtype=np.float64))
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1
    grad /= N
    return loss, grad


def class_labels(labels, N, K, scores="logits"):
    """`labels` checked: N integers in [0, K), one per row of the (N, K) `scores`."""
    labels = np.asarray(labels)
    if labels.shape != (N,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {N} integers (one per row of {scores}), got {labels.dtype} array "
                         f"of shape {labels.shape}")
    if N and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels must lie in [0, {K}), got values in [{labels.min()}, {labels.max()}]")
    return labels


def binary_log_loss(y, targets, *, from_logits=False, eps=1e-12):
    """Mean binary cross-entropy (log loss) of predictions against 0/1 targets.

    Parameters
    ----------
    y : ndarray, float32 or float64, any shape
        Probabilities in [0, 1] (e.g. the output of a `Sigmoid` layer), or,
        with ``from_logits=True``, real-valued scores whose sigmoid is the
        probability (numerically safer).
    targets : array, same shape as `y`
        Labels in {0, 1} (or soft targets in [0, 1]).
    from_logits : bool
    eps : float
        Probabilities are clipped to ``[eps, 1 - eps]`` so the log stays finite.

    Returns
    -------
    loss : float
        ``-mean(t*log(p) + (1 - t)*log(1 - p))`` (0.0 for empty input).
    grad_y : ndarray, dtype and shape of `y`
        Its gradient with respect to `y`: ``(p - t) / (p*(1 - p)) / y.size``,
        or ``(sigmoid(y) - t) / y.size`` from logits.
    """
    y = v.float_array(y, "y")
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.integer, np.floating)) \
            or not 0 <= eps < 0.5:
        raise ValueError(f"eps must be a number in [0, 0.5), got {eps!r}")
    targets = np.asarray(targets)
    if targets.dtype.kind not in "biuf":
        raise TypeError(f"targets must be an array of real numbers, got dtype {targets.dtype}")
    if targets.shape != y.shape:
        raise ValueError(f"targets must have the shape of y {y.shape}, got {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() > 1):
        raise ValueError(f"targets must lie in [0, 1], got values in [{targets.min()}, {targets.max()}]")
    t = targets.astype(y.dtype)
    n = y.size
    if n == 0:
        return 0.0, np.zeros_like(y)
    if from_logits:
        # softplus(y) - t*y == -(t*log(sigmoid(y)) + (1-t)*log(1-sigmoid(y))), without overflow
        loss = float((np.logaddexp(0, y) - t * y).mean(dtype=np.float64))
        grad = (0.5 * (1 + np.tanh(0.5 * y)) - t) / y.dtype.type(n)
        return loss, grad
    if y.min() < 0 or y.max() > 1:
        raise ValueError("y must hold probabilities in [0, 1]; pass from_logits=True for scores")
    p = np.clip(y, eps, 1 - eps)
    loss = -float((t * np.log(p) + (1 - t) * np.log1p(-p)).mean(dtype=np.float64))
    grad = (p - t) / (p * (1 - p)) / y.dtype.type(n)
    return loss, grad
