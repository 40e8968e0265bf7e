"""Optimisers for any object with ``params`` and ``grads`` dicts (a layer, a
`Sequential`): each ``step()`` reads the current gradients and updates the
parameter arrays in place, with the update rules of ``torch.optim``, then clears
the model's eval caches (``clear_eval_cache``)."""
import numpy as np

__all__ = ["SGD", "Adam"]


def _number(value, name, low, high=np.inf, low_open=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not (low < value if low_open else low <= value) or not value < high:
        raise ValueError(f"{name} must be a number in {'(' if low_open else '['}{low}, {high}), got {value!r}")
    return float(value)


class _Optimizer:
    def __init__(self, model, lr, weight_decay):
        if not (hasattr(model, "params") and hasattr(model, "grads")):
            raise TypeError(f"model must have params and grads dicts, got {type(model).__name__}")
        self.model = model
        self.lr = _number(lr, "lr", 0, low_open=True)
        self.weight_decay = _number(weight_decay, "weight_decay", 0)
        self.state = {}

    def _pairs(self):
        params, grads = self.model.params, self.model.grads
        for key, p in params.items():
            if key not in grads:
                raise KeyError(f"parameter {key!r} has no gradient in model.grads")
            g = grads[key]
            if np.shape(g) != p.shape:
                raise ValueError(f"the gradient of {key!r} has shape {np.shape(g)}, its parameter {p.shape}")
            state = self.state.get(key)         # SGD: the velocity; Adam: (m, s)
            kept = () if state is None else state if isinstance(state, tuple) else (state,)
            if any(a.shape != p.shape for a in kept):
                raise ValueError(f"parameter {key!r} has shape {p.shape} now, unlike its state from earlier steps; "
                                 f"a new optimizer starts afresh")
            if self.weight_decay:
                g = g + self.weight_decay * p
            yield key, p, g

    def _updated(self):
        # the parameters changed in place: eval caches derived from them (batch norm
        # folded into convolutions, transformed weights) must not outlive them
        clear = getattr(self.model, "clear_eval_cache", None)
        if clear is not None:
            clear()


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum (``torch.optim.SGD``).

    The update::

        v = momentum * v + g        (v = g on the first step)
        p -= lr * v

    where ``g = grad + weight_decay * p``.
    """

    def __init__(self, model, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        self.momentum = _number(momentum, "momentum", 0, 1)

    def step(self):
        """Update every parameter array in place from its current gradient."""
        for key, p, g in self._pairs():
            if self.momentum:
                velocity = self.state.get(key)
                if velocity is None:
                    velocity = self.state[key] = np.array(g, dtype=p.dtype)
                else:
                    velocity *= self.momentum
                    velocity += g
                g = velocity
            p -= (self.lr * g).astype(p.dtype, copy=False)
        self._updated()


class Adam(_Optimizer):
    """Adam (``torch.optim.Adam``).

    At step t::

        m = beta1 * m + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * g**2
        p -= lr * (m / (1 - beta1**t)) / (sqrt(s / (1 - beta2**t)) + eps)
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        self.betas = (_number(betas[0], "betas[0]", 0, 1), _number(betas[1], "betas[1]", 0, 1))
        self.eps = _number(eps, "eps", 0)
        self.t = 0

    def step(self):
        """Update every parameter array in place from its current gradient."""
        self.t += 1
        b1, b2 = self.betas
        correction1, correction2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for key, p, g in self._pairs():
            if key not in self.state:
                self.state[key] = (np.zeros_like(p), np.zeros_like(p))
            m, s = self.state[key]
            m *= b1
            m += (1 - b1) * g
            s *= b2
            s += (1 - b2) * np.square(g)
            p -= (self.lr * (m / correction1) / (np.sqrt(s / correction2) + self.eps)).astype(p.dtype, copy=False)
        self._updated()
