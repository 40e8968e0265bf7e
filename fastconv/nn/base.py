"""The base of every layer: the forward/backward interface, torch's naming of
parameters and buffers, state dicts, save/load and the summary table.

Every layer has ``forward(x, training=True) -> y`` and
``backward(grad_output) -> grad_input``. ``params`` and ``grads`` are dicts of
arrays with the same keys; ``buffers`` holds state that is not trained (batch
norm's running statistics). ``backward`` overwrites ``grads`` (no accumulation)
and needs the cache that ``forward(..., training=True)`` keeps;
``training=False`` keeps no cache and turns dropout off.

Containers (`Sequential`, `Residual`) name their children as torch does, so
that ``params``, ``grads`` and ``state_dict()`` are keyed by torch's dotted
names (``"layer1.0.conv1.weight"``, ``"bn1.running_mean"``), in torch's order.

The ops come from a backend module: `fastconv` by default, or any module with
the same functions, e.g. `fastconv.reference` (pure NumPy) to compare speeds::

    from fastconv import reference
    model.set_backend(reference)
"""
import collections.abc

import numpy as np

import fastconv
from fastconv import _validation as v

__all__ = ["Layer", "Identity"]


def _dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in v.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


_INIT_CHUNK = 1 << 18


def _initial_weight(rng, shape, fan_in, fan_out, init, dtype):
    """Initial weights of the given shape and dtype.

    ``"he"``: normal with std ``sqrt(2 / fan_in)`` (for ReLU nets);
    ``"he_uniform"``: uniform in ``±sqrt(6 / fan_in)`` (the same variance, drawn
    about ten times faster: the model zoo's choice); ``"glorot"``: uniform in
    ``±sqrt(6 / (fan_in + fan_out))``. The values are drawn in float64, in
    chunks cast into the result, so one seed gives the same weights in float32
    and float64 without a float64 copy of the whole tensor.
    """
    v.choice(init, "init", ("he", "he_uniform", "glorot"))
    dtype = np.dtype(dtype)
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1)
    buf = np.empty(min(flat.size, _INIT_CHUNK)) if dtype != np.float64 else None
    if init == "he":
        std = np.sqrt(2.0 / fan_in)
    else:
        limit = np.sqrt(6.0 / fan_in) if init == "he_uniform" else np.sqrt(6.0 / (fan_in + fan_out))
    for start in range(0, flat.size, _INIT_CHUNK):
        n = min(_INIT_CHUNK, flat.size - start)
        chunk = flat[start:start + n] if buf is None else buf[:n]
        if init == "he":
            rng.standard_normal(out=chunk)
            chunk *= std
        else:
            rng.random(out=chunk)      # as rng.uniform(-limit, limit): low + (high - low) * u
            chunk *= 2 * limit
            chunk += -limit
        if buf is not None:
            flat[start:start + n] = chunk
    return out


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _as_array(value, key):
    """A state-dict value as an ndarray: NumPy arrays, CPU torch tensors, lists, scalars."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):     # a torch tensor, maybe requiring grad
        value = value.detach()
    try:
        a = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - whatever the object raises, name the key
        raise TypeError(f"state_dict entry {key!r} cannot be read as an array: {e}") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"state_dict entry {key!r} must be numeric, got dtype {a.dtype}")
    return a


def _rng(rng):
    """`numpy.random.default_rng(rng)`: a seed, a SeedSequence, a Generator or None."""
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError) as e:
        raise type(e)(f"rng must be None, a non-negative int seed or a numpy.random.Generator, got {rng!r}") from e


def _nchw(layer, input_shape):
    """`input_shape` as (N, C, H, W), or a ValueError naming `layer`."""
    if len(input_shape) != 4:
        raise ValueError(f"{layer!r} expects input of shape (N, C, H, W), got {tuple(input_shape)}")
    return tuple(input_shape)


class Layer:
    """Base class: a layer without parameters whose forward is the identity."""

    def __init__(self, backend=None):
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self._backend = backend
        self._cache = None

    # -- the backend ---------------------------------------------------------
    @property
    def backend(self):
        """The module the ops come from (`fastconv` unless set otherwise)."""
        return fastconv if self._backend is None else self._backend

    def set_backend(self, backend):
        """Use the ops of `backend` (a module such as `fastconv.reference`); returns self."""
        self._backend = backend
        for _, child in self.named_children():
            child.set_backend(backend)
        return self

    # -- the interface -------------------------------------------------------
    def forward(self, x, training=True):
        """The layer's output for the batch `x`; with `training`, keep what `backward` needs."""
        return x

    def backward(self, grad_output):
        """The gradient for the input of the last training `forward`, given the
        gradient for its output; fills `grads` with the parameters' gradients."""
        return grad_output

    def _backward_params(self, grad_output):
        """`backward` where the input's gradient is not needed (the network's input,
        as torch leaves an input that does not require grad): fills `grads` only.
        Layers whose input gradient costs work of its own skip it."""
        self.backward(grad_output)

    def __call__(self, x, training=True):
        return self.forward(x, training)

    def output_shape(self, input_shape):
        """Shape of ``forward(x)`` for an `x` of shape `input_shape` (batch axis included)."""
        return tuple(input_shape)

    def _infer(self, x, owned):
        """Eval-mode forward for containers: ``(y, owned)``, where `owned` says that
        the array is a temporary of this forward, free to be overwritten in place: a
        fresh result is; one that may share the input's memory (the input itself, a
        view of it: an identity, a reshape, a subclass's forward) only if the input was."""
        y = self.forward(x, training=False)
        return y, (owned if np.may_share_memory(y, x) else True)

    def _grad_output(self, grad_output, shape):
        """`grad_output` checked against `shape`, the forward's output's: a float array
        of that shape (either float dtype: an elementwise layer's gradient keeps the
        dtype it comes in)."""
        return v.grad_output_array(grad_output, shape, None)

    def _weighted_input(self, x, ndim):
        """`x` checked against a layer with weights: `ndim`-D, of the weights' dtype."""
        x = v.float_array(x, "x", ndim=ndim)
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but {self!r} has {self.dtype} weights; "
                            f"convert one of them (mixed dtypes are not cast silently)")
        return x

    def _remember(self, training, *values):
        self._cache = values if training else None

    def _recall(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a preceding forward(x, training=True)")
        return self._cache

    def _set_grads(self, **grads):
        for key, value in grads.items():
            if key in self.params:
                self.grads[key] = value

    # -- the tree of layers --------------------------------------------------
    def named_children(self):
        """``(name, layer)`` for each direct child (none for a leaf layer)."""
        return iter(())

    def children(self):
        return (child for _, child in self.named_children())

    def named_modules(self, prefix=""):
        """``(dotted name, layer)`` for this layer (name `prefix`, ``""`` at the
        root) and every layer below it, depth first, as ``torch.nn.Module``."""
        seen = set()

        def walk(layer, name):
            if id(layer) in seen:
                return
            seen.add(id(layer))
            yield name, layer
            for child_name, child in layer.named_children():
                yield from walk(child, f"{name}.{child_name}" if name else child_name)

        yield from walk(self, prefix)

    def _local(self, kind):
        """This layer's own (not its children's) params, grads or buffers."""
        return self.__dict__.get(kind, {})

    def _gather(self, kind):
        out = {}
        for name, layer in self.named_modules():
            for key, value in layer._local(kind).items():
                out[f"{name}.{key}" if name else key] = value
        return out

    def named_parameters(self):
        return iter(self._gather("params").items())

    def named_buffers(self):
        return iter(self._gather("buffers").items())

    def state_dict(self):
        """Parameters and buffers keyed by torch's dotted names, in torch's order
        (each layer's parameters, then its buffers, then its children's).

        The values are the model's own arrays (not copies), as torch's are.
        """
        out = {}
        for name, layer in self.named_modules():
            for kind in ("params", "buffers"):
                for key, value in layer._local(kind).items():
                    out[f"{name}.{key}" if name else key] = value
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy the arrays of `state_dict` into this model's, in place.

        Parameters
        ----------
        state_dict : mapping of str to array-like
            NumPy arrays or anything `numpy.asarray` reads (CPU torch tensors
            included), keyed as `state_dict()`; values are converted to the
            dtype of the model's arrays.
        strict : bool
            Whether the keys must match exactly (a missing ``num_batches_tracked``
            is allowed, as torch allows it); either way a wrongly shaped entry is
            an error.

        Raises
        ------
        ValueError
            Naming the missing, unexpected or wrongly shaped keys; nothing is
            copied then.
        """
        if not isinstance(state_dict, collections.abc.Mapping) and not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
        own = self.state_dict()
        given = set(state_dict.keys())
        # as torch for a plain dict: checkpoints from before batch norm counted its
        # batches load, keeping the count the model has
        missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state_dict.keys() if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict does not match this model: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        values = {}
        for key, target in own.items():
            if key not in given:
                continue
            a = _as_array(state_dict[key], key)
            if a.shape != target.shape:
                raise ValueError(f"state_dict entry {key!r} has shape {a.shape}, the model expects {target.shape}")
            if not np.can_cast(a.dtype, target.dtype, casting="same_kind"):
                raise TypeError(f"state_dict entry {key!r} has dtype {a.dtype}, which does not convert "
                                f"to the model's {target.dtype}")
            if target.dtype.kind in "iu" and a.size:
                info = np.iinfo(target.dtype)
                if a.min() < info.min or a.max() > info.max:
                    raise ValueError(f"state_dict entry {key!r} holds {a.max() if a.max() > info.max else a.min()}, "
                                     f"outside the model's {target.dtype}")
            values[key] = a
        for key, a in values.items():
            np.copyto(own[key], a, casting="same_kind")
        self.clear_eval_cache()
        return self

    def clear_eval_cache(self):
        """Forget what eval-mode forwards keep between calls: batch norm folded into
        convolutions, and each convolution's weights in the layout its algorithm runs
        (Winograd's transformed weights, the direct tiles' packing). Done
        automatically by training forwards, `load_state_dict` and the optimisers'
        ``step``; a wholesale in-place rewrite of the weights is also caught (a sample
        of them is compared on each call); call it after editing a few weights by hand."""
        for _, layer in self.named_modules():
            clear = getattr(type(layer), "_clear_folded", None)
            if clear is not None:
                clear(layer)

    # -- weights -------------------------------------------------------------
    def num_params(self):
        return int(sum(p.size for p in self.params.values()))

    def save(self, path):
        """Write `state_dict()` (parameters and buffers) to `path` as a ``.npz`` archive."""
        np.savez(path, **self.state_dict())

    def load(self, path):
        """Read an archive written by `save` into this model's arrays, in place.

        The archive must hold exactly the keys of `state_dict()`, with the same
        shapes; values are converted to each array's dtype. Pickles are refused.
        """
        with np.load(path, allow_pickle=False) as data:
            try:
                self.load_state_dict({k: data[k] for k in data.files})
            except (ValueError, TypeError) as e:
                raise type(e)(f"{path}: {e}") from None
        return self

    # -- summary -------------------------------------------------------------
    #: Whether eval forwards write the output over the input (or hand the input
    #: on), so that the layer stores no activation of its own.
    _in_place = False

    def _stores(self, input_shape, output_shape):
        """Whether an eval forward allocates this layer's output (for `summary`)."""
        return not self._in_place

    def _summary(self, shape, name):
        """Rows ``(name, layer, output shape with batch, parameters, stores)`` and the output shape."""
        out = self.output_shape(shape)
        return [(name, self, out, self.num_params(), self._stores(shape, out))], out

    def summary_rows(self, input_shape):
        """(name, output shape, parameters, activation values) per leaf layer, input first.

        `input_shape` is one example's shape, e.g. ``(3, 224, 224)``; shapes are
        reported without the batch axis. Names are the layers' dotted names; a
        residual sum is a row of its own, named ``"<block>.add"``.
        """
        return [(r[0], r[1], r[2], r[3]) for r in self._rows(input_shape)]

    def _rows(self, input_shape):
        shape = (1,) + tuple(v.integer(n, "input_shape", minimum=1) for n in input_shape)
        rows = [("input", shape[1:], 0, int(np.prod(shape)), None, True)]
        body, _ = self._summary(shape, "")
        rows += [(name or type(layer).__name__, out[1:], n, int(np.prod(out)), layer, stores)
                 for name, layer, out, n, stores in body]
        return rows

    def summary(self, input_shape, dtype=None):
        """Print, per layer, the output shape, the number of parameters and the
        activation memory for one example of shape `input_shape` (without the
        batch axis), and the totals: the accounting usually done by hand for VGGNet.

        Activation memory is counted in the dtype of the model's weights (or
        `dtype`). The forward total counts the arrays an eval forward stores:
        ReLU works in place and Dropout, Flatten and Identity hand on their
        input, so their rows add nothing; a last line says what training adds.
        """
        if dtype is None:
            dtype = next((p.dtype for p in self.state_dict().values() if p.dtype.kind == "f"),
                         np.dtype(np.float32))
        itemsize = np.dtype(dtype).itemsize
        rows = self._rows(input_shape)
        name_w = max(12, max(len(r[0]) for r in rows) + 2)
        kinds = [("" if r[4] is None else repr(r[4]).split("\n")[0]) for r in rows]
        kind_w = max(8, max(len(k) for k in kinds) + 2)
        counts = [_weights_and_biases(r[4], r[2]) for r in rows]
        count_w = max(14, max(len(c) for c in counts) + 2)
        header = (f"{'layer':<{name_w}}{'kind':<{kind_w}}{'output shape':<18}{'parameters':>{count_w}}"
                  f"{'activations':>14}{'memory':>12}")
        lines = [header]
        stored = 0
        for (name, shape, _, n_act, _, keeps), kind, count in zip(rows, kinds, counts):
            stored += n_act if keeps else 0
            memory = _bytes(n_act * itemsize) if keeps else "in place"
            lines.append(f"{name:<{name_w}}{kind:<{kind_w}}{str(shape):<18}{count:>{count_w}}{n_act:>14,}"
                         f"{memory:>12}")
        total_params = sum(r[2] for r in rows)
        total_act = sum(r[3] for r in rows)
        lines.append("-" * len(header))
        lines.append(f"{'total stored':<{name_w}}{'':<{kind_w}}{'':<18}{total_params:>{count_w},}{stored:>14,}"
                     f"{_bytes(stored * itemsize):>12}")
        name = np.dtype(dtype).name
        lines.append(f"parameters: {total_params:,} ({_bytes(total_params * itemsize)} in {name}; a row shows "
                     f"weights + biases where its layer has both); "
                     f"activations per example: {total_act:,} values ({_bytes(total_act * itemsize)}) over all "
                     f"rows, {stored:,} values ({_bytes(stored * itemsize)}) stored by a forward")
        lines.append(f"training adds: a gradient for every parameter ({_bytes(total_params * itemsize)}) and for "
                     f"every stored activation (about x2 the forward's {_bytes(stored * itemsize)} per example), "
                     f"plus the optimiser's state (SGD momentum 1x, Adam 2x the parameters)")
        print("\n".join(lines))

    def __getattr__(self, name):
        # torch style access to named children: model.layer1[0].conv1
        if not name.startswith("_") and "_cache" in self.__dict__:
            for child_name, child in type(self).named_children(self):
                if child_name == name:
                    return child
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self):
        return f"{type(self).__name__}()"


def _weights_and_biases(layer, n_params):
    """A summary row's parameter count, as "weights + biases" where the layer has both."""
    params = getattr(layer, "params", {})
    if "weight" in params and "bias" in params and n_params == params["weight"].size + params["bias"].size:
        return f"{params['weight'].size:,} + {params['bias'].size:,}"
    return f"{n_params:,}"


class Identity(Layer):
    """Returns its input unchanged (as ``torch.nn.Identity``), any shape."""

    _in_place = True

    def forward(self, x, training=True):
        self._remember(training, True)
        return x

    def backward(self, grad_output):
        self._recall()
        return grad_output
