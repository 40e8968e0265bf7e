"""`algorithm="auto"`: the convolution algorithm this CPU runs fastest, measured.

Which of im2col, direct and winograd is fastest depends on the CPU (vector width,
FMA units, caches, the BLAS and its configuration) as much as on the shapes: the
same winograd kernel runs the 3x3 cases C2/C3 at a third of direct's time on a
Zen 1 (AVX2, 128-bit FMA units) and at about 0.6x on an AVX-512 Xeon. So
``"auto"`` measures. The first time a call falls into a *shape class*, it times
every algorithm that runs the call's geometry (`candidates`) on a bounded slice of
the call's problem and keeps the fastest for the class, for the rest of the process and,
when a cache file is named, for later processes on the same machine.

Shape classes. A class is what decides the speed and what real networks repeat:
the pass (forward; eval, the layers' eval forwards, whose weights are prepared once
and kept, so that a candidate's per-call weight transform or packing is not timed;
grad_x, also conv_transpose2d's forward; grad_weight: the backward takes each
gradient from the algorithm fastest for it), the dtype, dense / depthwise / grouped, channels per group in and out (power-of-two
buckets), the kernel, stride, dilation and padding kind (none, "same"-style,
other), the output plane's pixels and the batch (power-of-two buckets) and the
thread count the op runs on. A ResNet-18 or VGG-16 forward falls into about a
dozen classes; every later call is a dict lookup.

Slices. A candidate is timed on arrays of ones (values do not change the kernels'
speed; the caller's arrays are never read) of the call's channels, kernel and width,
with about an eighth of the call's multiply-adds (`SLICE_FRACTION`, within
`SLICE_MACS`..`SLICE_MACS_MAX`): whole images, or a band of one image's output rows
in whole winograd tiles. Per-call costs that do not shrink with the slice
(winograd's weight transform, direct's weight packing) would weigh more than in the
real call, so each candidate is timed at two slice sizes, a quarter and the whole
slice, and its time at the full size extrapolated from the line through them (fixed
cost + cost per output row). A problem within twice the budget is timed as it is. A
slice must also keep the threads as busy as the call does: im2col's tasks are bands
of output rows of one image (as tall as its column buffer allows: a whole image of a
pointwise convolution on a small map), and a one-image slice of one band runs on one
thread where the call keeps two busy; so where im2col is timed, each slice holds
whole bands and grows (in bands, else in whole images, up to `SLICE_EVEN_MAX`; the
smaller slice first shrinks, to half its rows at most) until its busiest thread has
at most `EVEN_SLACK` times the call's busiest thread's share of the work
(`_busiest`). All candidates are called round-robin: a warm-up (which drops
candidates `PRUNE` times slower than the fastest), then up to `REPEATS` rounds,
fewer when a round is long (about `CLASS_SECONDS` a class); each keeps its fastest
time. The warm-up runs twice (in turn and in reverse) and prunes on the faster of
the two, so a call that something else slowed (another runtime's threads spin for
milliseconds after each of their calls, holding a core) does not rule a candidate
out. The `RECHECK_CALLS`-th call of the class then times its two fastest candidates
once more and keeps each one's faster time of the two calibrations, which corrects a
choice made in such a moment.

Cost: for a large call about (2 + rounds) x 1.25 / 8 of one call of each candidate
(up to (2 + rounds) x 0.75 where im2col's tasks grow the slices: C5's two to four of
its eight images), for a small one five calls of each, and the recheck about as much
again for two of them; measured figures in docs/algorithms.rst.

The rule (`rule`) is the fallback and the prior: the measured reasoning of which of
direct and im2col wins on shape grounds alone (it never picks winograd, whose speed
depends most on the CPU). A measured candidate replaces the rule's choice only when
it is at least `MARGIN` faster, so that noise does not flip the choice between two
near-equal algorithms, and the rule's more accurate choice stays where winograd
does not clearly pay.

Switch and cache. ``FASTCONV_AUTOTUNE=0`` in the environment, or
`set_autotune(False)`, turns the calibration off: "auto" is then the rule, the same
on every run and every machine. ``FASTCONV_AUTOTUNE_CACHE=path`` or
`set_autotune_cache(path)` names a JSON file that keeps the choices (per CPU model,
build ISA, fastconv version, BLAS and OPENBLAS_CORETYPE) across processes; a file
that is not such a cache is warned about and left untouched. Results do not depend
on the choice beyond float rounding: winograd is within ``fastconv._winograd.RTOL``
of the largest output, the others within a few units in the last place.

Thread safety: lookups are lock-free; a miss takes one process-wide lock, so each
class is calibrated once, by one thread, while other threads that need the same
class wait for its choice.
"""
import heapq
import json
import math
import os
import threading
import time
import warnings

import numpy as np

from fastconv import __version__, _direct, _im2col, _threads, _winograd, convolution
from fastconv import _validation as v
from fastconv._kernels import ISA_NAMES

#: Environment variables: the switch ("0" turns calibration off) and the cache file.
ENABLE_VARIABLE = "FASTCONV_AUTOTUNE"
CACHE_VARIABLE = "FASTCONV_AUTOTUNE_CACHE"

#: Multiply-adds of the larger slice a candidate is timed on: an eighth of the call's,
#: but at least SLICE_MACS (1-2 ms of a core: long enough to time) and at most
#: SLICE_MACS_MAX (so that a huge batch does not make calibration take long).
SLICE_MACS = 1 << 26
SLICE_MACS_MAX = 1 << 28
SLICE_FRACTION = 8

#: Where im2col is timed, a slice's busiest thread may have at most EVEN_SLACK times
#: the share of the work that the call's has (`_busiest`); a slice grows to that, up
#: to SLICE_EVEN_MAX multiply-adds (a batch of pointwise convolutions on small maps,
#: one im2col task an image, needs two images a slice on two threads).
EVEN_SLACK = 1.1
SLICE_EVEN_MAX = 4 * SLICE_MACS_MAX

#: Timing rounds after the warm-up, and the time a class may spend on them: rounds
#: beyond the first are dropped when the warm-up round says they would exceed it.
REPEATS = 3
CLASS_SECONDS = 0.15

#: How much faster a measured candidate must be to replace the rule's choice.
MARGIN = 1.05

#: Calls of a class after its calibration at which its two fastest candidates are
#: timed once more (each keeping its faster time): a calibration that ran while
#: something else held a core (another runtime's threads spin for milliseconds after
#: each of their calls) is corrected before it can cost much.
RECHECK_CALLS = 3

#: Classes kept per process; past it new classes take the rule (a program that
#: sweeps shapes does not grow the cache without bound).
MAX_CLASSES = 4096

PASSES = ("forward", "eval", "grad_x", "grad_weight")

_lock = threading.RLock()
_choices = {}            # class key -> {"choice": name, "seconds": {name: predicted time}}
_keys = {}               # a call's shapes, dtype and thread count -> its class key
_state = {"enabled": None, "cache_file": None, "cache_file_set": False, "loaded": False, "warned": set()}


# ---------------------------------------------------------------------------
# The switch and the cache file

def set_autotune(enabled):
    """Turn the calibration of ``algorithm="auto"`` on (the default) or off.

    Off, "auto" follows a fixed rule of the shapes (`fastconv._autotune.rule`):
    the same choice on every run and machine. On, it times the algorithms the
    first time a shape class is seen and keeps the fastest. Overrides the
    ``FASTCONV_AUTOTUNE`` environment variable ("0": off).

    Parameters
    ----------
    enabled : bool
    """
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"enabled must be True or False, got {type(enabled).__name__} {enabled!r}")
    _state["enabled"] = bool(enabled)


def get_autotune():
    """Whether ``algorithm="auto"`` calibrates (`set_autotune`, else ``FASTCONV_AUTOTUNE``)."""
    if _state["enabled"] is None:
        return os.environ.get(ENABLE_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")
    return _state["enabled"]


def set_autotune_cache(path):
    """Keep the calibrated choices in the JSON file `path` (None: in this process only).

    Choices found in the file for this machine (CPU model, build, fastconv version,
    BLAS) are used without timing; new ones are added to it as they are measured.
    A file that is not such a cache is left untouched, with a warning. Overrides the
    ``FASTCONV_AUTOTUNE_CACHE`` environment variable.

    Parameters
    ----------
    path : str, os.PathLike or None
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, an os.PathLike or None, got {type(path).__name__} {path!r}")
    with _lock:
        _state["cache_file"] = None if path is None else os.fspath(path)
        _state["cache_file_set"] = True
        _state["loaded"] = False


def _cache_file():
    if _state["cache_file_set"]:
        return _state["cache_file"]
    return os.environ.get(CACHE_VARIABLE) or None


def autotune_choices():
    """The classes calibrated in this process (or read from the cache file), as a list
    of dicts: ``class`` (the class key), ``choice`` (the algorithm "auto" runs) and
    ``seconds`` (each candidate's time, extrapolated to the first call of the class)."""
    with _lock:
        return [{"class": key, "choice": rec["choice"], "seconds": dict(rec["seconds"])}
                for key, rec in _choices.items()]


def clear():
    """Forget every calibrated choice of this process (the cache file is kept)."""
    with _lock:
        _choices.clear()
        _state["loaded"] = False


def machine():
    """What a cached choice is valid for: CPU model, the kernels' ISA, fastconv's version,
    the BLAS im2col calls and how it is configured."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    if not model:
        import platform

        model = platform.processor() or platform.machine()
    kernel = _winograd.kernel
    blas = ", ".join(f"{lib['library']} {lib['version']}" for lib in _threads.blas.info())
    return (f"{model}; {ISA_NAMES[kernel.compiled_isa()]}; fastconv {__version__}; {blas}; "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '')}")


_FORMAT = "fastconv autotune cache 1"


def _read_cache(path):
    """The file's {machine: {key: record}}, {} if it does not exist, None if it is not a cache."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("machines"), dict):
        return None
    return data["machines"]


def _warn_once(path, message):
    if path not in _state["warned"]:
        _state["warned"].add(path)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _load_cache():
    """Merge this machine's entries of the cache file into the process's choices (once)."""
    if _state["loaded"]:
        return
    _state["loaded"] = True
    path = _cache_file()
    if path is None:
        return
    machines = _read_cache(path)
    if machines is None:
        _warn_once(path, f"{CACHE_VARIABLE} / set_autotune_cache: {path!r} is not a fastconv autotune cache; "
                         f"it is ignored and left as it is")
        return
    entries = machines.get(machine(), {})
    if not isinstance(entries, dict):
        return
    for key, rec in entries.items():
        if (isinstance(rec, dict) and isinstance(rec.get("choice"), str) and isinstance(rec.get("seconds"), dict)
                and key not in _choices):
            _choices[key] = {"choice": rec["choice"], "seconds": rec["seconds"]}    # not rechecked: kept as saved


def _save_cache(key):
    path = _cache_file()
    if path is None:
        return
    machines = _read_cache(path)
    if machines is None:
        return                      # not ours: warned about when loaded, never overwritten
    machines.setdefault(machine(), {})[key] = {name: _choices[key][name] for name in ("choice", "seconds")}
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump({"format": _FORMAT, "machines": machines}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)       # readers see the old file or the new one, never half of one
    except OSError as e:
        with _ignore_errors():
            os.remove(tmp)
        _warn_once(path, f"could not write the autotune cache {path!r}: {e}")


class _ignore_errors:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


# ---------------------------------------------------------------------------
# The rule and the candidates

def rule(pass_, x_shape, weight_shape, g, groups, dtype):
    """The algorithm "auto" runs without calibration, and the prior of the calibration.

    Forward: direct, whose register tiles run near the FMA peak with no column copy,
    except for a pointwise (1x1, stride 1, unpadded) convolution, a plain GEMM that
    BLAS's packing does as well in float32; in float64 direct's channel tiles beat
    BLAS where they run (AVX-512 builds) and cover at least three quarters of the
    channels; and im2col where one output row's input planes would not fit direct's
    bound. grad_x and grad_weight: direct for one-channel groups (depthwise), where
    the GEMMs are degenerate, and elsewhere too: its grad_weight runs on register tiles
    over the forward's planes and grad_x on the forward's tiles (one stride phase at a
    time at stride > 1), so that no BLAS and no BLAS configuration sets its speed;
    except a pointwise convolution, two plain GEMMs, small output planes, which im2col
    runs tap by tap over the whole batch (`fastconv._im2col.by_taps`: backward 5.7x faster
    than direct's tiles on 2x2 planes, 1.35x on 4x4; the tiles span rows of a few
    pixels), and geometries whose planes would not fit, all im2col. Never winograd:
    where it pays depends most on the CPU.
    Re-measure with ``python -m fastconv bench --sections direct``.
    """
    dtype = np.dtype(dtype)
    if pass_ not in ("forward", "eval") and weight_shape[1] == 1:
        return "direct"
    if not _direct.planes_fit(x_shape[1], g, dtype.itemsize):
        return "im2col"
    if pass_ not in ("forward", "eval"):
        return "im2col" if _im2col.pointwise(g) or _im2col.by_taps(g, groups, x_shape) else "direct"
    if _im2col.pointwise(g):
        covered = _direct.channel_tiles_cover(g, weight_shape[0] // groups, math.prod(weight_shape[1:]), dtype)
        return "direct" if dtype == np.float64 and covered else "im2col"
    return "direct"


def _winograd_runs(g):
    return (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.dilation_h, g.dilation_w) == (3, 3, 1, 1, 1, 1)


def candidates(pass_, x_shape, weight_shape, g, groups, dtype):
    """The algorithms that run this call: im2col and direct (direct's forward only where its
    planes fit), and winograd for 3x3, stride 1, dilation 1 (grad_weight: im2col, direct).
    The gradients' im2col is timed too: on small maps it beats direct's tiles (C1's
    grad_weight at about 0.75x direct's time in float32; planes small enough for its
    taps, `fastconv._im2col.by_taps`, by far more); where the two are near-equal the
    rule's direct stays (MARGIN), as BLAS's speed hangs on its build and settings."""
    names = ["im2col", "direct"]
    if pass_ in ("forward", "eval") and not _direct.planes_fit(x_shape[1], g, np.dtype(dtype).itemsize):
        names.remove("direct")
    if pass_ != "grad_weight" and _winograd_runs(g):
        names.append("winograd")
    return names


def _bucket(n):
    """n's power-of-two bucket: 0, 1, 2, 3-4, 5-8, ... (bit length of n - 1, n itself below 3)."""
    return n if n < 3 else 1 + (n - 1).bit_length()


def _padding_kind(g):
    if g.pad_top == g.pad_left == 0:
        return "none"
    half = (g.dilation_h * (g.kernel_h - 1) // 2, g.dilation_w * (g.kernel_w - 1) // 2)
    return "same" if (g.pad_top, g.pad_left) == half else "other"


def _macs(pass_, x_shape, weight_shape, g):
    N = x_shape[0]
    return N * weight_shape[0] * g.out_h * g.out_w * math.prod(weight_shape[1:])


def class_key(pass_, x_shape, weight_shape, g, groups, dtype):
    """The shape class of a call, as a readable string (the cache's key)."""
    if pass_ not in PASSES:
        raise ValueError(f"pass_ must be one of {PASSES}, got {pass_!r}")
    K, Cg = weight_shape[:2]
    kind = "dense" if groups == 1 else "depthwise" if Cg == 1 else "grouped"
    threads = _threads.num_threads_for_macs(_macs(pass_, x_shape, weight_shape, g))
    return (f"{pass_} {np.dtype(dtype).name} {kind} cin~{_bucket(Cg)} cout~{_bucket(K // groups)} "
            f"k{g.kernel_h}x{g.kernel_w} s{g.stride_h}x{g.stride_w} d{g.dilation_h}x{g.dilation_w} "
            f"pad={_padding_kind(g)} out~{_bucket(g.out_h * g.out_w)} n~{_bucket(x_shape[0])} threads={threads}")


# ---------------------------------------------------------------------------
# Choosing

def choose(pass_, x_shape, weight_shape, g, groups, dtype):
    """The algorithm "auto" runs for this call: the class's calibrated choice (timing
    the candidates the first time the class is seen), or the rule when calibration is
    off, has nothing to time (an empty batch) or only one candidate."""
    if not get_autotune() or x_shape[0] == 0:
        return rule(pass_, x_shape, weight_shape, g, groups, dtype)
    # the common case, a call of a calibrated class, is two dict lookups
    call = (pass_, tuple(x_shape), tuple(weight_shape), g, groups, np.dtype(dtype), _threads.get_num_threads())
    key = _keys.get(call)
    if key is None:
        if len(_keys) > MAX_CLASSES:
            _keys.clear()
        key = _keys[call] = class_key(pass_, x_shape, weight_shape, g, groups, dtype)
    found = _choices.get(key)
    names = candidates(pass_, x_shape, weight_shape, g, groups, dtype)
    if found is not None and found["choice"] in names:
        if not found.get("rechecked", True):
            found["calls"] += 1            # a lost count under a race only delays the recheck
            if found["calls"] >= RECHECK_CALLS:
                _recheck(key, found, pass_, x_shape, weight_shape, g, groups, dtype)
        return found["choice"]
    prior = rule(pass_, x_shape, weight_shape, g, groups, dtype)
    if len(names) == 1:
        return names[0]
    with _lock:
        _load_cache()
        found = _choices.get(key)
        if found is not None and found["choice"] in names:
            return found["choice"]
        if len(_choices) >= MAX_CLASSES:
            return prior
        try:
            seconds = calibrate(pass_, x_shape, weight_shape, g, groups, dtype, names)
        except (MemoryError, ValueError):
            seconds = None       # slices too large to allocate: the call itself will say so
        if not seconds:
            return prior
        _choices[key] = {"choice": _pick(prior, seconds), "seconds": seconds, "calls": 0, "rechecked": False}
        _save_cache(key)
        return _choices[key]["choice"]


def _recheck(key, found, pass_, x_shape, weight_shape, g, groups, dtype):
    """Time the class's two fastest candidates again and keep each one's faster time
    of the two calibrations; then save the choice to the cache file."""
    with _lock:
        if found["rechecked"]:
            return
        found["rechecked"] = True
        two = sorted(found["seconds"], key=found["seconds"].get)[:2]
        try:
            again = calibrate(pass_, x_shape, weight_shape, g, groups, dtype, two) if len(two) == 2 else {}
        except (MemoryError, ValueError):
            again = {}
        for name, t in again.items():
            found["seconds"][name] = min(found["seconds"][name], t)
        found["choice"] = _pick(rule(pass_, x_shape, weight_shape, g, groups, dtype), found["seconds"])
        if again:
            _save_cache(key)


def _pick(prior, seconds):
    """The fastest candidate, unless the prior is within MARGIN of it."""
    best = min(seconds, key=seconds.get)
    return prior if prior in seconds and seconds[prior] <= MARGIN * seconds[best] else best


# ---------------------------------------------------------------------------
# Timing

def _slices(x_shape, weight_shape, g, dtype, pass_, num_threads, names):
    """[(images, output rows)] to time: the whole problem when it fits the budget, else
    a large slice within it (whole images, or a band of one image's output rows in
    whole winograd tiles) and a smaller one, about a quarter of it. Where im2col is
    timed, a slice must keep the threads about as evenly busy as the call does
    (`_busiest`, within EVEN_SLACK): im2col's tasks are whole bands of whole images,
    and a slice of fewer (or more uneven) tasks than the call's leaves a thread idle
    that the call keeps busy (C5's forward, one band an image, was predicted at 1.8x
    its im2col time on one-image slices). Such a slice grows, in whole bands, else
    whole images, up to SLICE_EVEN_MAX."""
    N = x_shape[0]
    full = _macs(pass_, x_shape, weight_shape, g)
    budget = min(max(SLICE_MACS, full // SLICE_FRACTION), SLICE_MACS_MAX)
    budget = max(budget, 2 * num_threads * _threads.MACS_PER_THREAD)
    if full <= 2 * budget:
        return [(N, g.out_h)]
    per_image = full // N
    # im2col's taps run GEMMs as tall as the batch times a small plane and re-lay the
    # weights once a call: a few images time them far slower per image than the call
    # runs (ResNet-18's 2x2 backward at batch 32: predicted 3.5x its time from 1 and 4
    # images), so one slice of as many images as the bound allows
    if _im2col.by_taps(g, x_shape[1] // max(1, weight_shape[1]), x_shape) and per_image <= SLICE_MACS_MAX:
        return [(min(N, 2 * SLICE_MACS_MAX // per_image), g.out_h)]
    slices = _budget_slices(N, full, budget, g, dtype, num_threads, "winograd" in names)
    if "im2col" not in names or num_threads < 2:
        return slices
    band = _im2col._band_rows(x_shape[1] * g.kernel_h * g.kernel_w, g, np.dtype(dtype).itemsize)
    call = _busiest(pass_, band, num_threads, N, g.out_h)

    def even(images, rows):
        return _busiest(pass_, band, num_threads, images, rows) <= EVEN_SLACK * call

    step = math.lcm(_winograd.tile_size(dtype)[0] if "winograd" in names else 1, band)

    def grow(images, rows, shrink=False):
        """The even slice nearest (images, rows): with `shrink`, a band of one image
        down to half its rows, in whole bands (and winograd tiles); else more rows,
        else more whole images; None where only the whole call is."""
        if shrink and images == 1 and not even(1, rows):
            fewer = (r for r in range(rows // step * step, rows // 2, -step) if r > 0 and even(1, r))
            rows = next(fewer, rows)
        while images == 1 and rows < g.out_h and not even(1, rows):
            rows = min(g.out_h, (rows // step + 1) * step)
        while images < N and not even(images, rows):
            images, rows = images + 1, g.out_h
        return None if images > N or (images, rows) == (N, g.out_h) else (images, rows)

    small, large = grow(*slices[0], shrink=True), grow(*slices[-1])
    if small is None or large is None:
        return [(N, g.out_h)] if full <= SLICE_EVEN_MAX else slices
    if len(slices) == 1:
        large = small
    elif small[0] * small[1] >= large[0] * large[1]:
        # the smallest even slice is the budget's large one: it and one about twice its size
        large = grow(small[0], min(g.out_h, 2 * small[1])) if small[1] < g.out_h else grow(2 * small[0], g.out_h)
    per_row = full // N // g.out_h
    if large is not None and large[0] * large[1] * per_row <= SLICE_EVEN_MAX:
        return sorted({small, large})
    return [small] if small[0] * small[1] * per_row <= SLICE_EVEN_MAX else slices


def _busiest(pass_, band, num_threads, images, rows):
    """The busiest thread's rows over an even split's, for im2col's bands of `band` rows on
    `images` images of `rows` rows: the forward's task pool hands them out in turn to the
    first free thread; the gradients run even bands, then odd ones, each split into
    contiguous blocks of tasks (a static schedule)."""
    tasks = images * -(-rows // band)
    if tasks > 32 * num_threads:
        return 1 + 2 * num_threads / tasks     # a bound, near even: not worth listing
    sizes = [min(band, rows - r0) for r0 in range(0, rows, band)] * images
    if pass_ in ("forward", "eval"):
        loads = [0] * num_threads
        for size in sizes:
            heapq.heapreplace(loads, loads[0] + size)
        return max(loads) * num_threads / sum(sizes)
    per_image = len(sizes) // images
    busiest = 0
    for parity in (0, 1):
        tasks = [size for i, size in enumerate(sizes) if i % per_image % 2 == parity]
        block = max(1, -(-len(tasks) // num_threads))
        busiest += max((sum(tasks[i:i + block]) for i in range(0, len(tasks), block)), default=0)
    return busiest * num_threads / sum(sizes)


def _budget_slices(N, full, budget, g, dtype, num_threads, winograd):
    """The slices of about `budget` multiply-adds (`_slices` without im2col's tasks)."""
    per_image = full // N
    if per_image <= budget and budget // per_image >= 4:
        images = min(N - 1, budget // per_image)
        return [(max(1, images // 4), g.out_h), (images, g.out_h)]
    step = _winograd.tile_size(dtype)[0] if winograd else 1
    per_row = max(1, per_image // g.out_h)
    # winograd: at least two chunks of tiles per thread, or a band of a few tile rows
    # fills a fraction of its chunks' lanes and times as if the whole call did
    fewest = step
    if winograd:
        row_tiles = -(-g.out_w // step)
        chunk = _winograd.kernel.chunk_tiles(np.dtype(dtype) == np.float64, row_tiles)
        fewest = step * -(-2 * num_threads * chunk // row_tiles)
        fewest = max(step, min(fewest, 2 * SLICE_MACS_MAX // per_row // step * step))
    rows = min(g.out_h, max(fewest, budget // per_row // step * step))
    quarter = max(fewest, rows // 4 // step * step)
    if quarter < rows:
        return [(1, quarter), (1, rows)]
    # one size would scale the per-call costs (winograd's weight transform, waking the
    # threads) with the call: two, in whole bands (C2's forward, an image a slice, was
    # predicted at 1.6x its winograd time, and auto kept direct at 1.6x winograd's time)
    return [(1, rows), (2, rows)] if N >= 2 and rows * per_row <= SLICE_MACS_MAX else [(1, rows)]


def _problem(x_shape, weight_shape, g, dtype, images, rows):
    """Arrays of ones for `images` images of `rows` output rows of the call's geometry:
    (x, weight, grad_output, geometry, conv2d keyword arguments)."""
    span_h = g.dilation_h * (g.kernel_h - 1) + 1
    span_w = g.dilation_w * (g.kernel_w - 1) + 1
    # the input under `rows` output rows, padded as the call is on top and left and as
    # much at the bottom and right (where the call may differ by less than a stride);
    # with more padding than that, the fewest rows the padding gives
    H = max(1, (rows - 1) * g.stride_h + span_h - 2 * g.pad_top)
    W = max(1, (g.out_w - 1) * g.stride_w + span_w - 2 * g.pad_left)
    kw = dict(stride=(g.stride_h, g.stride_w), padding=(g.pad_top, g.pad_left),
              dilation=(g.dilation_h, g.dilation_w))
    gs = v.conv_geometry((H, W), weight_shape[2:], **kw)
    x = np.ones((images, x_shape[1], H, W), dtype)
    weight = np.ones(weight_shape, dtype)
    grad_output = np.ones((images, weight_shape[0], gs.out_h, gs.out_w), dtype)
    return x, weight, grad_output, gs, kw


def _parts(pass_, names, x, weight, grad_output, gs, kw, groups, num_threads):
    """{candidate: zero-argument callable} timing the candidates on one slice problem."""
    import fastconv

    if pass_ == "forward":
        return {a: (lambda a=a: fastconv.conv2d(x, weight, None, groups=groups, algorithm=a, **kw)) for a in names}
    if pass_ == "eval":      # the layers' eval forwards: weights prepared once, outside the timing
        calls = {"im2col": lambda: _im2col.forward(x, weight, None, gs, groups, num_threads)}
        if "direct" in names:
            packed = _direct.prepare(weight, gs, groups)
            calls["direct"] = lambda: _direct.forward(x, weight, None, gs, groups, num_threads, packed=packed)
        if "winograd" in names:
            prepared = _winograd.prepare(weight, groups, num_threads)
            calls["winograd"] = lambda: _winograd.forward(x, weight, None, gs, groups, num_threads,
                                                          prepared=prepared)
        return calls
    if pass_ == "grad_weight":
        return {a: (lambda m=convolution._MODULES[a]: m.grad_weight(grad_output, x, weight, gs, groups, num_threads))
                for a in names}
    return {a: (lambda m=convolution._MODULES[a]: m.grad_x(grad_output, weight, x.shape, gs, groups, num_threads))
            for a in names}


def _time_round_robin(calls, repeats):
    """Fastest time of each callable over `repeats` round-robin rounds."""
    best = {name: math.inf for name in calls}
    names = list(calls)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            calls[name]()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _extrapolate(points, units):
    """Time at `units` output rows from [(rows, seconds)] at one or two slice sizes:
    a fixed cost (at most FIXED_SHARE of the larger slice's time: timing noise must not
    turn it into the whole) plus a cost per row, through the two points."""
    (u1, t1), (u2, t2) = points[0], points[-1]
    if u1 >= u2:
        return t2 * units / u2
    fixed = min(max((t1 * u2 - t2 * u1) / (u2 - u1), 0.0), FIXED_SHARE * t2)
    return fixed + (t2 - fixed) * units / u2


#: The most of a slice's time the extrapolation takes as fixed per call.
FIXED_SHARE = 0.9


#: Candidates whose warm-up call takes PRUNE times the fastest's are not timed further.
PRUNE = 2.5


def calibrate(pass_, x_shape, weight_shape, g, groups, dtype, names):
    """{candidate: seconds} for the call's full problem, extrapolated from slices; a
    candidate that fails on the slice (memory, BLAS's 32-bit limits) is left out."""
    num_threads = _threads.num_threads_for_macs(_macs(pass_, x_shape, weight_shape, g))
    slices = _slices(x_shape, weight_shape, g, dtype, pass_, num_threads, names)
    last = len(slices) - 1
    with _threads.threads(num_threads):
        problems = [_problem(x_shape, weight_shape, g, dtype, images, rows) for images, rows in slices]
        calls = {(name, i): fn for i, problem in enumerate(problems)
                 for name, fn in _parts(pass_, names, *problem, groups, num_threads).items()}
        warm = {}
        t0 = time.perf_counter()
        for name_i in list(calls) + list(calls)[::-1]:     # twice: a disturbed call prunes nothing
            if name_i not in calls:
                continue
            t1 = time.perf_counter()
            try:
                calls[name_i]()
            except (MemoryError, ValueError):
                del calls[name_i]
                continue
            warm[name_i] = min(warm.get(name_i, math.inf), time.perf_counter() - t1)
        # the warm-up sizes the rounds, and rules out candidates far behind the fastest
        rough = {name: t for (name, i), t in warm.items() if i == last}
        keep = {name for name, t in rough.items() if t <= PRUNE * min(rough.values())}
        calls = {(name, i): fn for (name, i), fn in calls.items() if name in keep}
        repeats = max(1, min(REPEATS, int(CLASS_SECONDS / max(time.perf_counter() - t0, 1e-9))))
        best = _time_round_robin(calls, repeats)
        best = {name_i: min(t, warm[name_i]) for name_i, t in best.items()}
    rows = [x.shape[0] * gs.out_h for x, _, _, gs, _ in problems]     # output rows of each slice
    return {name: _extrapolate([(rows[i], best[name, i]) for i in range(len(problems))], x_shape[0] * g.out_h)
            for name in names if all((name, i) in best for i in range(len(problems)))}
