"""fastconv.dask against the in-memory ops: random shapes and chunkings (hypothesis, on
the synchronous scheduler), and on a real two-process distributed.LocalCluster: every op,
a worker killed mid-computation, the model and weights shipped once, the worker's threads."""
import os
import signal
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
from conftest import assert_close, assert_within_winograd_bound  # noqa: E402
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastconv  # noqa: E402
import fastconv.dask as fd  # noqa: E402
from fastconv import _autotune, _memory, _winograd  # noqa: E402
from fastconv import _validation as v  # noqa: E402
from fastconv.convolution_transpose import _args as _transposed_args  # noqa: E402

DTYPES = (np.float32, np.float64)
SYNC = dict(scheduler="synchronous")
EXAMPLES = settings(max_examples=12, deadline=None)


@pytest.fixture(scope="module")
def client():
    # calibration off in the workers: each process would otherwise measure its own choices
    # (test_predict_digits_on_the_cluster_ships_the_model_once compares them bitwise)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, env={_autotune.ENABLE_VARIABLE: "0"})
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(autouse=True)
def one_thread():
    """Single-threaded in-process ops: the arrays are tiny, and on a loaded machine a
    thread team waiting at its barrier for a descheduled member costs more than the op."""
    with fastconv.threads(1):
        yield


def assert_same(got, expected):
    """Bitwise equal (NaNs in the same places), with the in-memory op's shape and dtype."""
    got = np.asarray(got)
    assert got.shape == expected.shape and got.dtype == expected.dtype, (got.shape, expected.shape)
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------
# Strategies

@st.composite
def chunking(draw, n, max_cuts=4):
    """Chunk sizes of an axis of length n: any, including size 1 and a single chunk."""
    if n <= 1:
        return (n,)
    cuts = sorted(draw(st.lists(st.integers(1, n - 1), max_size=max_cuts, unique=True)))
    edges = [0] + cuts + [n]
    return tuple(b - a for a, b in zip(edges, edges[1:]))


@st.composite
def dask_images(draw, min_hw=1, channels=(1, 4)):
    """(x, dx): an (N, C, H, W) array and the same as a randomly chunked dask array."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = (draw(st.integers(0, 3)), draw(st.integers(*channels)),
             draw(st.integers(min_hw, 20)), draw(st.integers(min_hw, 20)))
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    chunks = tuple(draw(chunking(n, cuts)) for n, cuts in zip(shape, (1, 1, 3, 3)))
    return x, da.from_array(x, chunks=chunks)


def pairs(low, high):
    return st.one_of(st.integers(low, high), st.tuples(st.integers(low, high), st.integers(low, high)))


def _expected_or_skip(op, *args, **kwargs):
    """The in-memory result, or the error it raises (the dask op must raise it too, at once)."""
    try:
        return op(*args, **kwargs), None
    except (ValueError, TypeError) as error:
        return None, error


def check_against_memory(dask_op, memory_op, dx, x, exact=True, **kwargs):
    """`exact`: True (bitwise), False (to rounding) or a comparison function."""
    expected, error = _expected_or_skip(memory_op, x, **kwargs)
    if error is not None:
        with pytest.raises(type(error)):
            dask_op(dx, **kwargs)
        assume(False)
    got = dask_op(dx, **kwargs).compute(**SYNC)
    compare = exact if callable(exact) else assert_same if exact else assert_close
    compare(got, expected)


# ---------------------------------------------------------------------------
# Every op on random shapes and chunkings

@EXAMPLES
@given(data=dask_images(), k=pairs(1, 4), stride=pairs(1, 3), padding=pairs(0, 2), dilation=pairs(1, 2),
       out_channels=st.integers(1, 5), bias=st.booleans(),
       algorithm=st.sampled_from(["auto", "im2col", "direct", "winograd"]),
       seed=st.integers(0, 99))
def test_conv2d(data, k, stride, padding, dilation, out_channels, bias, algorithm, seed):
    x, dx = data
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out_channels, x.shape[1], kh, kw)).astype(x.dtype)
    b = rng.standard_normal(out_channels).astype(x.dtype) if bias else None
    check_against_memory(lambda a, **kw_: fd.conv2d(a, w, b, **kw_), lambda a, **kw_: fastconv.conv2d(a, w, b, **kw_),
                         dx, x, exact=_comparison(x, w, stride, padding, dilation, algorithm), stride=stride,
                         padding=padding, dilation=dilation, algorithm=algorithm)


def _comparison(x, w, stride, padding, dilation, algorithm, groups=1):
    """How blockwise conv2d compares with in-memory: bitwise for direct, which sums each
    output in the same order in every block; to rounding for im2col, whose BLAS GEMM blocks
    its sums by the matrix sizes; within twice winograd's bound for winograd, whose tiles
    start at each block's first output row (each result within the bound of the exact one)."""
    if algorithm == "auto":
        try:
            _, _, _, g, _ = v.conv2d_args(x, w, None, stride, padding, dilation, groups)
        except (ValueError, TypeError):
            return assert_same
        return _auto_comparison(g)
    return {"direct": assert_same, "im2col": assert_close,
            "winograd": lambda got, want: assert_within_winograd_bound(got, want, sides=2)}[algorithm]


def _auto_comparison(g):
    """`_comparison` for "auto": it times each shape class on its own, so a block may run
    another algorithm than the whole array (the whole by direct, a block by im2col: 64
    of 80 outputs 1 ulp apart). To rounding, or within winograd's bound where it runs."""
    try:
        _winograd.check_geometry(g)
    except ValueError:
        return assert_close
    return _comparison(None, None, 1, 0, 1, "winograd")


@EXAMPLES
@given(data=dask_images(channels=(2, 4)), k=pairs(1, 3), seed=st.integers(0, 99))
def test_conv2d_same_and_groups(data, k, seed):
    x, dx = data
    kh, kw = (k, k) if isinstance(k, int) else k
    groups = 2 if x.shape[1] % 2 == 0 else 1
    w = np.random.default_rng(seed).standard_normal((4, x.shape[1] // groups, kh, kw)).astype(x.dtype)
    check_against_memory(lambda a, **kw_: fd.conv2d(a, w, **kw_), lambda a, **kw_: fastconv.conv2d(a, w, **kw_),
                         dx, x, exact=_comparison(x, w, 1, "same", 1, "auto", groups), padding="same", groups=groups)


def _transposed_comparison(x, w, algorithm, **kw):
    """`_comparison` for conv_transpose2d, whose algorithm "auto" picks for conv2d's grad_x."""
    if algorithm == "auto":
        try:
            _, _, _, groups, out_shape, g = _transposed_args(x, w, None, kw["stride"], kw["padding"],
                                                             kw["output_padding"], kw["groups"], kw["dilation"])
        except (ValueError, TypeError):
            return assert_same
        return _auto_comparison(g)
    return _comparison(x, w, 1, 0, 1, algorithm)


@EXAMPLES
@given(data=dask_images(), k=pairs(1, 4), stride=pairs(1, 3), padding=pairs(0, 2), dilation=pairs(1, 2),
       output_padding=pairs(0, 1), groups=st.sampled_from([1, 2]),
       algorithm=st.sampled_from(["auto", "im2col", "direct", "winograd"]), seed=st.integers(0, 99))
def test_conv_transpose2d(data, k, stride, padding, dilation, output_padding, groups, algorithm, seed):
    x, dx = data
    assume(x.shape[1] % groups == 0)
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((x.shape[1], 3, kh, kw)).astype(x.dtype)
    b = rng.standard_normal(3 * groups).astype(x.dtype)
    kw_ = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    check_against_memory(lambda a, **kw_: fd.conv_transpose2d(a, w, b, **kw_),
                         lambda a, **kw_: fastconv.conv_transpose2d(a, w, b, **kw_), dx, x,
                         exact=_transposed_comparison(x, w, algorithm, **kw_), algorithm=algorithm, **kw_)


def test_conv_transpose2d_auto_runs_the_in_memory_choice(monkeypatch):
    """"auto" is resolved on the whole array, batch included, so the blocks run what
    the in-memory op runs: here calibration makes im2col the faster (rule: direct)."""
    from fastconv import _direct, _im2col

    monkeypatch.setattr(_autotune, "_choices", {})
    monkeypatch.setattr(_autotune, "get_autotune", lambda: True)
    monkeypatch.setattr(_autotune, "calibrate", lambda pass_, *args: {n: float(n != "im2col") for n in args[-1]})
    ran = []
    for module in (_im2col, _direct):
        real = module.grad_x
        monkeypatch.setattr(module, "grad_x", lambda *a, real=real, name=module.__name__: ran.append(name) or real(*a))
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    want = fastconv.conv_transpose2d(x, w, padding=1)
    assert ran == ["fastconv._im2col"]
    got = fd.conv_transpose2d(da.from_array(x, chunks=(1, 4, 5, 9)), w, padding=1).compute(**SYNC)
    assert set(ran) == {"fastconv._im2col"} and len(ran) > 2
    assert_close(got, want)


pool_args = dict(k=pairs(1, 4), stride=st.one_of(st.none(), pairs(1, 3)), padding=pairs(0, 2),
                 ceil_mode=st.booleans())


@EXAMPLES
@given(data=dask_images(), dilation=pairs(1, 2), unbatched=st.booleans(), nan=st.booleans(), **pool_args)
def test_max_pool2d(data, k, stride, padding, ceil_mode, dilation, unbatched, nan):
    x, dx = data
    if nan and x.size:
        x = x.copy()
        x.reshape(-1)[:: 7] = np.nan
        dx = da.from_array(x, chunks=dx.chunks)
    if unbatched and x.shape[0]:
        x, dx = x[0], dx[0]
    check_against_memory(fd.max_pool2d, fastconv.max_pool2d, dx, x, kernel_size=k, stride=stride,
                         padding=padding, dilation=dilation, ceil_mode=ceil_mode)


@EXAMPLES
@given(data=dask_images(), count_include_pad=st.booleans(),
       divisor_override=st.one_of(st.none(), st.integers(1, 7)), **pool_args)
def test_avg_pool2d(data, k, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x, dx = data
    check_against_memory(fd.avg_pool2d, fastconv.avg_pool2d, dx, x, kernel_size=k, stride=stride,
                         padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                         divisor_override=divisor_override)


@EXAMPLES
@given(data=dask_images(), **pool_args)
def test_sum_pool2d(data, k, stride, padding, ceil_mode):
    x, dx = data
    check_against_memory(fd.sum_pool2d, fastconv.sum_pool2d, dx, x, kernel_size=k, stride=stride,
                         padding=padding, ceil_mode=ceil_mode)


@EXAMPLES
@given(dtype=st.sampled_from(DTYPES), shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
       kernel=st.tuples(st.integers(1, 7), st.integers(1, 7)), mode=st.sampled_from(["full", "same", "valid"]),
       data=st.data())
def test_convolve2d(dtype, shape, kernel, mode, data):
    rng = np.random.default_rng(0)
    image = rng.standard_normal(shape).astype(dtype)
    k = rng.standard_normal(kernel).astype(dtype)
    chunks = tuple(data.draw(chunking(n)) for n in shape)
    # Bitwise where the in-memory op's border windows sum in the interior's order; its
    # clipped border loops may round differently, so the comparison is to rounding.
    check_against_memory(lambda a, **kw: fd.convolve2d(a, k, **kw), lambda a, **kw: fastconv.convolve2d(a, k, **kw),
                         da.from_array(image, chunks=chunks), image, exact=False, mode=mode)


def test_one_chunk_and_chunks_smaller_than_the_kernel():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 13, 11)).astype(np.float32)
    w = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    same_conv = _comparison(x, w, 3, 2, 1, "auto")
    for chunks in ((1, 2, 13, 11), (1, 1, 1, 1), (1, 2, 2, 3), (1, 1, 7, 4)):
        dx = da.from_array(x, chunks=chunks)
        same_conv(fd.conv2d(dx, w, stride=3, padding=2).compute(**SYNC), fastconv.conv2d(x, w, stride=3, padding=2))
        assert_same(fd.max_pool2d(dx, 5, 3, 2, ceil_mode=True).compute(**SYNC),
                    fastconv.max_pool2d(x, 5, 3, 2, ceil_mode=True))


def test_halo_blocks_follow_the_window_centres():
    # Input chunks of 5 rows, stride 2, kernel 3, padding 1: output o's window is centred on
    # input row 2*o, so each output goes to the chunk under that row; a block reads its
    # windows whole: the halo (one row here) from the chunks beside it, padding at the border.
    axis = fd._conv_axes(4, (1, 1, 20, 20), v.pool_geometry((20, 20), 3, 2, 1))[2]
    assert axis.blocks((5, 5, 5, 5)) == [(3, -1, 6), (2, 5, 10), (3, 9, 16), (2, 15, 20)]
    plan = fd._axis_plan((5, 5, 5, 5), axis)
    assert [pads for _, _, pads in plan] == [(1, 0), (0, 0), (0, 0), (0, 0)]
    assert [pieces for _, pieces, _ in plan] == [[(0, 0, 5), (1, 0, 1)], [(1, 0, 5)],
                                                 [(1, 4, 5), (2, 0, 5), (3, 0, 1)], [(3, 0, 5)]]
    # Stride 1 and "same" padding: the output chunks are the input chunks.
    x = da.zeros((30, 41), chunks=(7, 10))
    assert fd.convolve2d(x, np.ones((5, 3)), "same").chunks == x.chunks


def test_only_the_halo_is_cut_from_the_neighbours():
    from dask.local import get_sync

    x = da.random.default_rng(0).standard_normal((64, 48), chunks=16)
    graph = dict(fd.convolve2d(x, np.ones((5, 3)), "same").__dask_graph__())
    bundles = [key for key in graph if key[0].startswith("fastconv-convolve2d-halo")]
    # One task per chunk cuts all that its neighbours read, and nothing more: rows above and
    # below (2 of 16 columns, 2 of 16 rows at the corners), columns beside.
    assert sorted(key[1:] for key in bundles) == [(i, j) for i in range(4) for j in range(3)]
    shapes = {np.shape(part) for bundle in get_sync(graph, bundles) for part in bundle}
    assert shapes <= {(2, 16), (16, 1), (2, 1)}, shapes
    # Copies: a part sent to another worker does not carry the chunk with it.
    assert all(part.base is None for part in get_sync(graph, bundles[0]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolve2d_of_fortran_ordered_read_only_chunks(dtype):
    rng = np.random.default_rng(7)
    image = np.asfortranarray(rng.standard_normal((37, 29)).astype(dtype))
    image.flags.writeable = False
    kernel = rng.standard_normal((4, 3)).astype(dtype)
    for mode in ("full", "same", "valid"):
        got = fd.convolve2d(da.from_array(image, chunks=(11, 8)), kernel, mode).compute(**SYNC)
        assert_close(got, fastconv.convolve2d(image, kernel, mode))


def test_convolve2d_block_of_read_only_pieces():
    # On a cluster the chunk and the halo arrive from other workers, deserialised read-only.
    rng = np.random.default_rng(8)
    image, kernel = rng.standard_normal((20, 20)), rng.standard_normal((3, 3))
    image.flags.writeable = False
    pieces = [[image[:10, :10], image[:10, 10:11]], [image[10:11, :10], image[10:11, 10:11]]]
    layout = ((1, (10, 1), 0), (1, (10, 1), 0))
    got = fd._convolve2d_block(pieces, layout, np.ascontiguousarray(kernel[::-1, ::-1]), rows_per_pass=3,
                               dtype=image.dtype)
    assert_close(got, fastconv.convolve2d(image, kernel, "same")[:10, :10])


@pytest.mark.parametrize("dtype", DTYPES)
def test_convolve2d_blocks_of_several_huge_pages(dtype):
    # A block of 8 MiB or more (fastconv._memory.LARGE) comes from fastconv._memory.empty,
    # and may reuse a released block's memory: equal to the in-memory op all the same.
    rng = np.random.default_rng(9)
    image, kernel = rng.standard_normal((1500, 1501)).astype(dtype), rng.standard_normal((3, 4)).astype(dtype)
    _memory.empty(image.shape, dtype).fill(np.nan)        # released at once, full of NaN
    got = fd.convolve2d(da.from_array(image, chunks=(1500, 1501)), kernel, "same").compute(**SYNC)
    assert_close(got, fastconv.convolve2d(image, kernel, "same"))


def test_convolve2d_of_a_kernel_too_large_to_go_in_each_task():
    rng = np.random.default_rng(10)
    image, kernel = rng.standard_normal((120, 130)), rng.standard_normal((91, 91))   # 66 KB
    x = da.from_array(image, chunks=40)
    got = fd.convolve2d(x, kernel, "same")
    assert len(dict(got.__dask_graph__())) == 3 * x.npartitions + 1      # and the kernel's key
    assert_close(got.compute(**SYNC), fastconv.convolve2d(image, kernel, "same"))


def test_convolve2d_is_one_task_per_block_and_one_halo_task_per_chunk():
    # No task computes a part of a block for another to finish, and the kernel rides in the
    # tasks: on a cluster each task costs scheduler and worker time, each level of tasks a
    # round trip through the scheduler.
    x = da.random.default_rng(0).standard_normal((64, 48), chunks=16)
    graph = dict(fd.convolve2d(x, np.ones((5, 3)), "same").__dask_graph__())
    ours = [key for key in graph if key[0].startswith("fastconv-")]
    assert len(ours) == 2 * x.npartitions
    assert len(graph) == len(ours) + x.npartitions


# ---------------------------------------------------------------------------
# Validation before any task runs

def _poisoned(shape, dtype=np.float32):
    """A dask array whose computation fails: building a graph on it must not compute it."""
    def fail(block):
        raise AssertionError("a task ran")
    return da.zeros(shape, dtype=dtype, chunks=2).map_blocks(fail, dtype=dtype)


@pytest.mark.parametrize("call, error, name", [
    (lambda x: fd.conv2d(x, np.zeros((2, 3, 3, 3), np.float32), stride=0), ValueError, "stride"),
    (lambda x: fd.conv2d(x, np.zeros((2, 3, 3, 3), np.float64)), TypeError, "weight"),
    (lambda x: fd.conv2d(x, np.zeros((2, 4, 3, 3), np.float32)), ValueError, "weight"),
    (lambda x: fd.conv2d(x, da.zeros((2, 3, 3, 3), np.float32)), TypeError, "weight"),
    (lambda x: fd.conv2d(x, np.zeros((2, 3, 3, 3), np.float32), algorithm="fft"), ValueError, "algorithm"),
    (lambda x: fd.conv_transpose2d(x, np.zeros((3, 2, 3, 3), np.float32), output_padding=2), ValueError,
     "output_padding"),
    (lambda x: fd.max_pool2d(x, 2, padding=2), ValueError, "padding"),
    (lambda x: fd.max_pool2d(x, 20), ValueError, "kernel_size"),
    (lambda x: fd.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda x: fd.avg_pool2d(x, 2, count_include_pad=1), TypeError, "count_include_pad"),
    (lambda x: fd.sum_pool2d(x, 2, ceil_mode="yes"), TypeError, "ceil_mode"),
    (lambda x: fd.convolve2d(x[0, 0], np.ones((3, 3), np.float32), mode="circular"), ValueError, "mode"),
    (lambda x: fd.convolve2d(x, np.ones((3, 3), np.float32)), ValueError, "in1"),
    (lambda x: fd.convolve2d(x[0, 0], np.ones((9, 2), np.float32), mode="valid"), ValueError, "valid"),
    (lambda x: fd.predict(fastconv.Sequential(fastconv.ReLU()), x, batch_size=0), ValueError, "batch_size"),
    (lambda x: fd.predict(object(), x), TypeError, "model"),
])
def test_invalid_arguments_raise_before_compute(call, error, name):
    with pytest.raises(error, match=name):
        call(_poisoned((2, 3, 6, 6)))


def test_wrong_dtype_and_unknown_chunks():
    with pytest.raises(TypeError, match="x must have dtype"):
        fd.max_pool2d(da.zeros((1, 1, 4, 4), dtype=np.int32), 2)
    x = da.zeros((8, 1, 4, 4), chunks=2)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        fd.max_pool2d(x[x[:, 0, 0, 0] > 0], 2)


# ---------------------------------------------------------------------------
# On a two-process LocalCluster

def _all_ops(x, dtype):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, x.shape[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    wt = rng.standard_normal((x.shape[1], 2, 3, 3)).astype(dtype)
    k = rng.standard_normal((5, 5)).astype(dtype)
    return {
        "conv2d": lambda m, a: m.conv2d(a, w, b, stride=2, padding=1),
        "conv_transpose2d": lambda m, a: m.conv_transpose2d(a, wt, None, stride=2, padding=1, output_padding=1),
        "max_pool2d": lambda m, a: m.max_pool2d(a, 3, 2, 1, ceil_mode=True),
        "avg_pool2d": lambda m, a: m.avg_pool2d(a, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        "sum_pool2d": lambda m, a: m.sum_pool2d(a, 2),
        "convolve2d": lambda m, a: m.convolve2d(a[0, 0], k, "same"),
    }


def test_every_op_on_the_cluster(client):
    lazy, expected = [], []
    for dtype in DTYPES:
        x = np.random.default_rng(3).standard_normal((3, 2, 45, 38)).astype(dtype)
        dx = da.from_array(x, chunks=(3, 2, 23, 20))
        compare = {"conv2d": _comparison(x, np.empty((4, x.shape[1], 3, 3), dtype), 2, 1, 1, "auto"),
                   "conv_transpose2d": _transposed_comparison(x, np.empty((x.shape[1], 2, 3, 3), dtype), "auto",
                                                              stride=2, padding=1, output_padding=1, groups=1,
                                                              dilation=1),
                   "convolve2d": assert_close}
        for name, op in _all_ops(x, dtype).items():
            lazy.append(op(fd, dx))
            expected.append((name, op(fastconv, x), compare.get(name, assert_same)))
    for got, (_name, want, compare) in zip(client.compute(lazy, sync=True), expected):
        compare(got, want)


def test_a_killed_worker_is_retried_and_the_result_unchanged(client):
    x = np.random.default_rng(4).standard_normal((4, 2, 40, 40)).astype(np.float32)
    w = np.random.default_rng(5).standard_normal((3, 2, 3, 3)).astype(np.float32)

    def slow(block):
        time.sleep(0.4)
        return block

    dx = da.from_array(x, chunks=(1, 2, 20, 40)).map_blocks(slow, dtype=x.dtype)
    future = client.compute(fd.conv2d(dx, w, padding=1))
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 10
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = [address for address, tasks in client.processing().items() if tasks]
    victim = busy[0] if busy else next(iter(pids))
    os.kill(pids[victim], signal.SIGKILL)
    _comparison(x, w, 1, 1, 1, "auto")(future.result(timeout=60), fastconv.conv2d(x, w, padding=1))
    assert victim not in client.scheduler_info()["workers"]
    client.wait_for_workers(2, timeout=30)


def test_tasks_run_with_the_workers_thread_count(client):
    def probe():
        with fd._threads_context():
            return fd._task_threads(), fastconv.get_num_threads()

    assert client.submit(probe, pure=False).result() == (1, 1)
    assert fd._task_threads() is None           # outside a worker: fastconv's default


def test_a_workers_threads_are_shared_by_its_executing_tasks(monkeypatch):
    from types import SimpleNamespace

    for executing, expected in ((1, 4), (2, 2), (3, 1), (8, 1), (0, 4)):
        state = SimpleNamespace(nthreads=4, executing=set(range(executing)))
        monkeypatch.setattr(distributed, "get_worker", lambda state=state: SimpleNamespace(state=state))
        assert fd._task_threads() == expected


def test_tasks_in_one_process_share_its_threads(monkeypatch):
    # dask's threaded scheduler: fastconv's thread count shared among the tasks running at once.
    import threading

    monkeypatch.setattr(fastconv._threads, "_default", 4)      # the scheduler's threads' default
    seen = []

    def second_task():
        with fd._threads_context():
            seen.append(fastconv.get_num_threads())

    with fastconv.threads(4):                                   # this one's (one_thread set 1)
        assert [fd._task_threads(running) for running in (1, 2, 3, 4, 8)] == [None, 2, 1, 1, 1]
        with fd._threads_context():                             # a first task, alone: all 4
            seen.append(fastconv.get_num_threads())
            thread = threading.Thread(target=second_task)
            thread.start()
            thread.join()
    assert seen == [4, 2] and fd._running == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_ops_on_the_threaded_scheduler(dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 23, 19)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    dx = da.from_array(x, chunks=(1, 2, 6, 5))
    threads = dict(scheduler="threads", num_workers=3)
    assert_same(fd.conv2d(dx, w, padding=1, algorithm="direct").compute(**threads),
                fastconv.conv2d(x, w, padding=1, algorithm="direct"))
    assert_same(fd.max_pool2d(dx, 3, 2, 1).compute(**threads), fastconv.max_pool2d(x, 3, 2, 1))
    image, kernel = x[0, 0], w[0, 0]
    for mode in ("full", "same", "valid"):
        assert_close(fd.convolve2d(dx[0, 0], kernel, mode).compute(**threads),
                     fastconv.convolve2d(image, kernel, mode))


def _data_keys(graph, value):
    """Keys of the graph's literal-data nodes holding `value`."""
    return [k for k, node in graph.items() if getattr(node, "value", None) is value]


def test_predict_digits_on_the_cluster_ships_the_model_once(client, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setitem(_autotune._state, "enabled", False)     # as in the workers: the same choices
    from fastconv.training import lenet, load_digits

    model = lenet(rng=0)
    x = load_digits()[0]
    y = fd.predict(model, da.from_array(x, chunks=(100, 1, 8, 8)), batch_size=300)
    assert y.chunks[0] == tuple(np.diff(np.r_[0:len(x):300, len(x)]))
    graph = dict(y.__dask_graph__())
    (key,) = _data_keys(graph, model)
    forward = [node for k, node in graph.items() if k[0].startswith("_forward_block")]
    assert len(forward) == y.numblocks[0] and all(key in node.dependencies for node in forward)
    assert_same(y.compute(), model.forward(x, training=False))


def test_conv2d_weight_is_one_key():
    x = da.zeros((4, 3, 16, 16), dtype=np.float32, chunks=(1, 1, 5, 5))
    w = np.ones((2, 3, 3, 3), np.float32)
    graph = dict(fd.conv2d(x, w).__dask_graph__())
    weight_keys = [k for k, node in graph.items() if isinstance(getattr(node, "value", None), np.ndarray)
                   and node.value.shape == w.shape]
    assert len(weight_keys) == 1


def test_predict_of_a_model_that_keeps_image_axes(monkeypatch):
    # batches of 4 and of 10 are separate shape classes: the same algorithm (and so the same
    # bits) only without calibration; with it, to rounding
    monkeypatch.setitem(_autotune._state, "enabled", False)
    model = fastconv.Sequential(fastconv.Conv2D(3, 4, 3, padding=1, rng=0), fastconv.ReLU(), fastconv.MaxPool2D(2))
    x = np.random.default_rng(6).standard_normal((10, 3, 8, 8)).astype(np.float32)
    y = fd.predict(model, da.from_array(x, chunks=(3, 1, 4, 4)), batch_size=4)
    assert y.chunks == ((4, 4, 2), (4,), (4,), (4,))
    assert_same(y.compute(**SYNC), model.forward(x, training=False))
