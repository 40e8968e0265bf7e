"""fastconv.viz against known answers: finite differences, models that read one region,
filters made dead, images built to excite a unit; and the --report files."""
import os
import re

import numpy as np
import pytest

import fastconv
from fastconv import nn, viz
from fastconv.layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    MaxPool2D,
    ReLU,
    Sequential,
)

DTYPES = [np.float32, np.float64]


def small_model(dtype=np.float64, rng=0):
    return Sequential(Conv2D(2, 3, 3, padding=1, dtype=dtype, rng=rng), ReLU(), MaxPool2D(2),
                      Flatten(), Dropout(0.5, rng=1), Linear(3 * 2 * 2, 4, dtype=dtype, rng=rng))


class Children:
    """A torch-style model: named_children() and a forward over them."""

    def __init__(self, **layers):
        self._layers = layers

    def named_children(self):
        return iter(self._layers.items())

    def forward(self, x, training=True):
        for layer in self._layers.values():
            x = layer.forward(x, training)
        return x


def test_activations_names_shapes_and_torch_style_children():
    model = small_model()
    x = np.random.default_rng(0).random((2, 2, 4, 4))
    acts = viz.activations(model, x)
    assert [n for n, _ in acts] == ["0", "1", "2", "3", "4", "5"]
    assert [a.shape for _, a in acts] == [(2, 3, 4, 4)] * 2 + [(2, 3, 2, 2), (2, 12), (2, 12), (2, 4)]
    np.testing.assert_array_equal(acts[-1][1], model.forward(x, training=False))
    other = Children(conv=model[0], relu=model[1])
    assert [n for n, _ in viz.activations(other, x)] == ["conv", "relu"]
    with pytest.raises(TypeError, match="x"):
        viz.activations(model, x.astype(np.int64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_saliency_matches_finite_differences(dtype):
    model = small_model(np.float64)
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4))
    target = np.array([1, 3])
    got = viz.saliency(model, x, target)
    assert got.shape == (2, 4, 4) and got.dtype == np.float64
    assert model[4].p == 0.5  # dropout switched back on
    eps = 1e-6
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        n = idx[0]
        diff = model.forward(up, training=False)[n, target[n]] - model.forward(down, training=False)[n, target[n]]
        grad[idx] = diff / (2 * eps)
    np.testing.assert_allclose(got, np.abs(grad).max(axis=1), rtol=1e-5, atol=1e-8)
    # float32 model and input: same map to float32 precision, float32 out
    m32 = small_model(np.float32)
    got32 = viz.saliency(m32, x.astype(np.float32), target)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, got, rtol=1e-3, atol=1e-5)


def region_model(dtype):
    """Scores read only the top-left 2x2 pixels of a 1x4x4 image."""
    lin = Linear(16, 3, dtype=dtype, rng=0)
    w = lin.params["weight"].reshape(3, 4, 4)
    w[:, 2:, :] = 0
    w[:, :, 2:] = 0
    lin.params["bias"][:] = [0.1, -0.2, 0.3]
    return Sequential(Flatten(), lin)


@pytest.mark.parametrize("dtype", DTYPES)
def test_occlusion_outside_the_read_region_changes_nothing(dtype, monkeypatch):
    monkeypatch.setattr(viz, "_OCCLUSION_BATCH", 4)  # batches that straddle images
    model = region_model(dtype)
    x = np.random.default_rng(2).uniform(0.5, 1.5, (3, 1, 4, 4)).astype(dtype)
    x_before = x.copy()
    heat = viz.occlusion(model, x, [0, 1, 2], patch=2, stride=1, fill=0.0)
    assert heat.shape == (3, 3, 3) and heat.dtype == dtype
    np.testing.assert_array_equal(x, x_before)
    scores = model.forward(x, training=False).astype(np.float64)
    p = np.exp(scores - scores.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    clean = p[np.arange(3), [0, 1, 2]]
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for i in range(3):
        for j in range(3):
            overlaps = i < 2 and j < 2  # patch rows i..i+1, cols j..j+1 meet the 2x2 region
            if not overlaps:
                np.testing.assert_allclose(heat[:, i, j], clean, rtol=tol)
    # one position against a hand-made occlusion
    hidden = x.copy()
    hidden[:, :, 1:3, 0:2] = 0
    s = model.forward(hidden, training=False).astype(np.float64)
    q = np.exp(s - s.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    np.testing.assert_allclose(heat[:, 1, 0], q[np.arange(3), [0, 1, 2]], rtol=tol)
    assert np.abs(heat[:, 0, 0] - clean).max() > 1e-3
    # stride 2 and a rectangular patch
    assert viz.occlusion(model, x, 0, patch=(1, 3), stride=2).shape == (3, 2, 1)


def windowed_models(dtype):
    """(name, model, image shape): Sequentials whose leading conv/pool layers the windowed
    path of `occlusion` handles, with padding, stride, dilation, pooling and a zoo model."""
    rng = np.random.default_rng(10)
    yield "digits", Sequential(Conv2D(1, 6, 3, padding=1, dtype=dtype, rng=rng), ReLU(), MaxPool2D(2),
                               Conv2D(6, 8, 3, padding=1, dtype=dtype, rng=rng), ReLU(), MaxPool2D(2),
                               Flatten(), Linear(8 * 3 * 3, 5, dtype=dtype, rng=rng)), (2, 1, 13, 12)
    bn = nn.BatchNorm2D(4, dtype=dtype)
    bn.buffers["running_mean"][:] = rng.standard_normal(4)
    bn.buffers["running_var"][:] = rng.uniform(0.5, 2, 4)
    yield "strided", Sequential(
        Conv2D(3, 4, 5, stride=2, padding=2, dtype=dtype, rng=rng), nn.LeakyReLU(0.1),
        Conv2D(4, 4, 3, padding="same", dilation=2, groups=2, dtype=dtype, rng=rng), bn, nn.Tanh(),
        MaxPool2D(3, stride=2, padding=1), nn.AvgPool2D(2, stride=1, padding=1), Dropout(0.5),
        nn.AdaptiveAvgPool2D(2), Flatten(), Linear(16, 3, dtype=dtype, rng=rng)), (3, 3, 15, 17)
    yield "lenet5", nn.models.lenet5(num_classes=4, dtype=dtype, rng=1), (2, 1, 28, 28)


@pytest.mark.parametrize("dtype", DTYPES)
def test_occlusion_windowed_path_equals_the_plain_loop_on_reference_layers(dtype, monkeypatch):
    import copy

    from fastconv import reference

    tol = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-13)
    rng = np.random.default_rng(11)
    for name, model, shape in windowed_models(dtype):
        local, rest = viz._split_local(model)
        assert any(step.window for step in local), name  # the fast path applies
        slow = copy.deepcopy(model).set_backend(reference)
        x = rng.standard_normal(shape).astype(dtype)
        x_before = x.copy()
        targets = np.arange(len(x)) % 3
        for patch, stride, fill in ((4, 1, 0.0), ((3, 5), (2, 3), 0.7), (1, 2, -2.0), ((shape[2], 2), 1, 0.0),
                                    ((2, shape[3]), (3, 1), 1.5)):
            got = viz.occlusion(model, x, targets, patch=patch, stride=stride, fill=fill)
            want = viz._occlusion_by_forward(slow, x, targets, viz._positive_pair(patch, "patch"),
                                             viz._positive_pair(stride, "stride"), fill)
            assert got.shape == want.shape and got.dtype == dtype
            np.testing.assert_allclose(got, want, **tol, err_msg=f"{name} patch={patch} stride={stride}")
        # the windowed path on the reference layers' own ops
        np.testing.assert_allclose(viz.occlusion(slow, x, targets, patch=3), viz._occlusion_by_forward(
            slow, x, targets, (3, 3), (1, 1), 0.0), **tol, err_msg=name)
        np.testing.assert_array_equal(x, x_before)
        # blocks of a few items that straddle images, on two worker threads; crops cut
        # from the base maps row by row (no distinct crops gathered), then gathered for
        # one image at a time
        want = viz._occlusion_by_forward(slow, x, targets, (3, 3), (2, 2), 0.0)
        for crop_bytes, distinct_bytes in ((0, 1), (1 << 30, 1)):
            monkeypatch.setattr(viz, "_OCCLUSION_WINDOW_BYTES", 1)
            monkeypatch.setattr(viz, "_OCCLUSION_CROP_BYTES", crop_bytes)
            monkeypatch.setattr(viz, "_OCCLUSION_DISTINCT_BYTES", distinct_bytes)
            with fastconv.threads(2):
                got = viz.occlusion(model, x, targets, patch=3, stride=2)
            monkeypatch.undo()
            np.testing.assert_allclose(got, want, **tol, err_msg=f"{name} crop_bytes={crop_bytes}")


def test_occlusion_windowed_path_from_several_threads_and_shapes():
    """Calls at once from two threads, and calls one after another with other dtypes,
    shapes and thread counts (the helper threads keep their buffers between calls)."""
    import concurrent.futures
    import copy

    from fastconv import reference

    rng = np.random.default_rng(14)
    cases = []
    for dtype in DTYPES:
        for _, model, shape in windowed_models(dtype):
            x = rng.standard_normal(shape).astype(dtype)
            slow = copy.deepcopy(model).set_backend(reference)
            cases.append((model, x, viz._occlusion_by_forward(slow, x, np.ones(len(x), np.int64), (2, 3), (1, 2), 0.5)))
    tol = {np.float32: dict(rtol=1e-4, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-13)}

    def run(case, threads):
        model, x, _ = case
        with fastconv.threads(threads):
            return viz.occlusion(model, x, 1, patch=(2, 3), stride=(1, 2), fill=0.5)

    for threads in (1, 2, 3):
        for case in cases:
            np.testing.assert_allclose(run(case, threads), case[2], **tol[case[1].dtype.type])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, cases * 2, [2] * (2 * len(cases))))
    for case, got in zip(cases * 2, results):
        np.testing.assert_allclose(got, case[2], **tol[case[1].dtype.type])


def test_occlusion_general_path_where_the_windowed_one_does_not_apply():
    x = np.random.default_rng(12).standard_normal((2, 1, 6, 6))
    conv = Conv2D(1, 2, 3, dtype=np.float64, rng=0)
    for model in (Children(conv=conv, flat=Flatten(), fc=Linear(32, 3, dtype=np.float64, rng=0)),  # not Sequential
                  Sequential(nn.MaxPool2D(2, ceil_mode=True), Flatten(), Linear(9, 3, dtype=np.float64, rng=0))):
        assert viz._split_local(model)[0] in (None, [])
        got = viz.occlusion(model, x, 1, patch=2)
        plain = viz._occlusion_by_forward(model, x, np.array([1, 1]), (2, 2), (1, 1), 0.0)
        np.testing.assert_array_equal(got, plain)
    hidden = x.copy()
    hidden[:, :, 2:4, 1:3] = 0
    s = model.forward(hidden, training=False)
    p = np.exp(s - s.max(1, keepdims=True))
    np.testing.assert_allclose(got[:, 2, 1], (p / p.sum(1, keepdims=True))[:, 1])


def test_paste_crops_kernel_against_numpy():
    from fastconv._kernels import windows

    rng = np.random.default_rng(13)
    for dtype in DTYPES:
        base = rng.standard_normal((3, 2, 9, 10)).astype(dtype)
        window = rng.standard_normal((6, 2, 3, 4)).astype(dtype)
        image = np.array([0, 2, 1, 1, 0, 2], np.intp)
        top, left = np.array([0, 5, 2, 1, 3, 4], np.intp), np.array([0, 5, 5, 2, 1, 3], np.intp)
        wtop, wleft = np.array([-1, 2, 0, -3, 4, 1], np.intp), np.array([-2, 3, 1, 0, 0, -4], np.intp)
        out = np.empty((6, 2, 4, 5), dtype)
        windows.paste_crops(base, image, top, left, window, wtop, wleft, out, 2)
        for b in range(6):
            want = base[image[b], :, top[b]:top[b] + 4, left[b]:left[b] + 5].copy()
            for u in range(3):
                for v in range(4):
                    if 0 <= wtop[b] + u < 4 and 0 <= wleft[b] + v < 5:
                        want[:, wtop[b] + u, wleft[b] + v] = window[b, :, u, v]
            np.testing.assert_array_equal(out[b], want)
        # crops that are whole base maps (one copy each), and the gather alone
        whole = np.empty((6, 2, 9, 10), dtype)
        windows.paste_crops(base, image, np.zeros(6, np.intp), np.zeros(6, np.intp), window, wtop, wleft, whole, 1)
        gathered = np.empty((6, 2, 4, 5), dtype)
        windows.gather_crops(base, image, top, left, gathered, 2)
        for b in range(6):
            want = base[image[b]].copy()
            for u in range(3):
                for v in range(4):
                    if 0 <= wtop[b] + u < 9 and 0 <= wleft[b] + v < 10:
                        want[:, wtop[b] + u, wleft[b] + v] = window[b, :, u, v]
            np.testing.assert_array_equal(whole[b], want)
            np.testing.assert_array_equal(gathered[b], base[image[b], :, top[b]:top[b] + 4, left[b]:left[b] + 5])


def test_occlusion_bad_arguments():
    model = region_model(np.float64)
    x = np.ones((2, 1, 4, 4))
    with pytest.raises(ValueError, match="patch"):
        viz.occlusion(model, x, 0, patch=5)
    with pytest.raises(ValueError, match="target"):
        viz.occlusion(model, x, 3)
    with pytest.raises(ValueError, match="target"):
        viz.occlusion(model, x, [0, 1, 2])
    with pytest.raises(ValueError, match="x must be 4-D"):
        viz.occlusion(model, x[0], 0)
    with pytest.raises(TypeError, match="x"):
        viz.occlusion(model, x.astype(int), 0)
    with pytest.raises(ValueError, match="stride"):
        viz.occlusion(model, x, 0, stride=0)
    with pytest.raises(ValueError, match="target"):
        viz.saliency(model, x, -1)
    with pytest.raises(ValueError, match="num_classes"):
        viz.occlusion(Sequential(Conv2D(1, 2, 3, dtype=np.float64, rng=0)), x, 0)
    with pytest.raises(TypeError, match="fill"):
        viz.occlusion(model, x, 0, fill="grey")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dead_filters_finds_the_killed_channel(dtype):
    conv = Conv2D(1, 4, 3, dtype=dtype, rng=0)
    w = conv.params["weight"]
    w[:] = np.abs(w) + 0.1
    w[2] = 0
    conv.params["bias"][2] = -1
    model = Sequential(conv, ReLU(), Flatten(), Linear(4 * 3 * 3, 2, dtype=dtype, rng=0))
    x = np.random.default_rng(3).uniform(0.1, 1, (5, 1, 5, 5)).astype(dtype)
    dead = viz.dead_filters(model, x)
    assert set(dead) == {"0", "1"}
    for name in ("0", "1"):
        np.testing.assert_array_equal(dead[name], [2])


def pool_model(dtype):
    """Conv that copies its input (delta at the centre, padding 1), then 2x2 max pooling."""
    conv = Conv2D(1, 1, 3, padding=1, dtype=dtype, rng=0)
    conv.params["weight"][:] = 0
    conv.params["weight"][0, 0, 1, 1] = 1
    return Sequential(conv, ReLU(), MaxPool2D(2), Flatten(), Linear(16, 2, dtype=dtype, rng=0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_activating_images_and_receptive_fields(dtype):
    images = np.zeros((6, 1, 8, 8), dtype)
    images[4, 0, 5, 5] = 3.0     # pool unit (2, 2): field rows/cols 3..6
    images[1, 0, 0, 0] = 2.0     # pool unit (0, 0): field -1..2, clipped to 0..2
    images[2, 0, 7, 1] = 1.0
    images += np.random.default_rng(4).uniform(0, 0.01, images.shape).astype(dtype)
    model = pool_model(dtype)
    idx, crops = viz.top_activating(model, images, "2", 0, k=3)
    np.testing.assert_array_equal(idx, [4, 1, 2])
    np.testing.assert_array_equal(crops[0], images[4, :, 3:7, 3:7])
    np.testing.assert_array_equal(crops[1], images[1, :, 0:3, 0:3])
    np.testing.assert_array_equal(crops[2], images[2, :, 5:8, 0:3])  # unit (3, 0): rows 5..8, cols -1..2
    # the conv layer's own units see 3x3 (padding 1)
    idx, crops = viz.top_activating(model, images, "0", 0, k=1)
    assert idx.tolist() == [4]
    np.testing.assert_array_equal(crops[0], images[4, :, 4:7, 4:7])
    # after Flatten/Linear: the whole image; k larger than N: all images
    idx, crops = viz.top_activating(model, images, "4", 1, k=10)
    assert len(idx) == 6 and crops[0].shape == (1, 8, 8)


def test_layer_lookup_nested_and_errors():
    inner = Sequential(Conv2D(1, 2, 3, padding=1, dtype=np.float64, rng=0), ReLU())
    model = Sequential(inner, MaxPool2D(2), Flatten(), Linear(2 * 2 * 2, 3, dtype=np.float64, rng=0))
    x = np.random.default_rng(5).random((7, 1, 4, 4))
    assert [n for n, _ in viz.activations(model, x)] == ["0", "1", "2", "3"]
    idx, crops = viz.top_activating(model, x, "0.1", 1, k=2)
    idx0, _ = viz.top_activating(model, x, "0", 1, k=2)
    np.testing.assert_array_equal(idx, idx0)
    assert crops[0].shape[1:] in {(2, 2), (2, 3), (3, 2), (3, 3)}
    assert set(viz.dead_filters(model, x)) <= {"0.0", "0.1"}
    with pytest.raises(ValueError, match="layer 'nope'"):
        viz.top_activating(model, x, "nope", 0)
    with pytest.raises(ValueError, match="channel"):
        viz.top_activating(model, x, "0.1", 2)
    with pytest.raises(TypeError, match="layer"):
        viz.embed(model, x, 2)
    with pytest.raises(ValueError, match="method"):
        viz.embed(model, x, "2", method="umap")
    with pytest.raises(ValueError, match="images must be 4-D"):
        viz.top_activating(model, x[0], "0", 0)


def test_filter_grid_shape_and_range():
    w = np.random.default_rng(6).standard_normal((5, 3, 2, 2)).astype(np.float32)
    w_before = w.copy()
    grid = viz.filter_grid(w)
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3)  # 2 rows x 3 columns of 2x2 tiles, 1-pixel gaps
    assert grid.min() >= 0 and grid.max() <= 1
    tile = grid[1:3, 1:3]
    assert tile.min() == 0 and tile.max() == 1
    np.testing.assert_array_equal(w, w_before)
    grey = viz.filter_grid(np.random.default_rng(7).standard_normal((4, 1, 3, 3)), padding=0)
    assert grey.shape == (6, 6)
    assert viz.filter_grid(np.zeros((1, 4, 3, 3))).shape == (5, 5)
    assert viz.filter_grid(np.zeros((1, 4, 3, 3)))[2, 2] == 0.5  # constant filter: mid-grey
    with pytest.raises(ValueError, match="weight"):
        viz.filter_grid(w[0])
    with pytest.raises(ValueError, match="padding"):
        viz.filter_grid(w, padding=-1)


def test_embed_pca_and_tsne():
    pytest.importorskip("sklearn")
    model = small_model()
    x = np.random.default_rng(8).random((12, 2, 4, 4))
    pca = viz.embed(model, x, "3", method="pca")
    assert pca.shape == (12, 2) and np.isfinite(pca).all()
    codes = model.forward(x, training=False)  # just checks the codes are the layer's
    assert codes.shape == (12, 4)
    np.testing.assert_allclose(pca.mean(axis=0), 0, atol=1e-10)
    tsne = viz.embed(model, x, "3")
    assert tsne.shape == (12, 2) and np.isfinite(tsne).all()


def test_plot_helpers_write_pngs_and_draw_on_axes(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    model = small_model()
    x = np.random.default_rng(9).random((4, 2, 4, 4))
    paths = [
        viz.plot_filters(model[0].params["weight"], path=tmp_path / "f.png"),
        viz.plot_activations(viz.activations(model, x)[0][1][0], path=tmp_path / "a.png"),
        viz.plot_occlusion(viz.occlusion(model, x, 1, patch=2)[0], path=tmp_path / "o.png", image=x[0]),
        viz.plot_saliency(viz.saliency(model, x, 1)[0], path=tmp_path / "s.png"),
        viz.plot_embedding(viz.embed(model, x, "3", method="pca"), [0, 1, 0, 1], path=tmp_path / "e.png"),
        viz.plot_top_activating(viz.top_activating(model, x, "1", 0, k=3)[1], path=tmp_path / "t.png"),
        viz.plot_dead_filters({"0": np.array([1])}, {"0": 3}, path=tmp_path / "d.png"),
    ]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    fig = Figure()
    ax = fig.subplots()
    assert viz.plot_filters(model[0].params["weight"], ax=ax) is ax
    assert len(ax.images) == 1
    assert isinstance(viz.plot_saliency(np.zeros((3, 3))), Figure)
    # every helper draws on a given Axes (a pair with image=) and returns it
    draws = [
        lambda a: viz.plot_activations(viz.activations(model, x)[0][1][0], ax=a),
        lambda a: viz.plot_occlusion(viz.occlusion(model, x, 1, patch=2)[0], ax=a),
        lambda a: viz.plot_saliency(viz.saliency(model, x, 1)[0], ax=a),
        lambda a: viz.plot_embedding(viz.embed(model, x, "3", method="pca"), ax=a),
        lambda a: viz.plot_top_activating(viz.top_activating(model, x, "1", 0, k=3)[1], ax=a),
        lambda a: viz.plot_dead_filters({"0": np.array([1])}, {"0": 3}, ax=a),
    ]
    for draw in draws:
        a = Figure().subplots()
        assert draw(a) is a and (a.images or a.collections or a.patches)
    pair = Figure().subplots(1, 2)
    assert viz.plot_occlusion(np.zeros((3, 3)), ax=pair, image=x[0]) is pair
    assert len(pair[0].images) == len(pair[1].images) == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_and_embed_keep_float32_and_float64(dtype):
    model = small_model(dtype)
    x = np.random.default_rng(14).random((6, 2, 4, 4)).astype(dtype)
    acts = viz.activations(model, x)
    assert all(a.dtype == dtype for _, a in acts)
    points = viz.embed(model, x, "2", method="pca")
    assert points.shape == (6, 2) and points.dtype == np.float64 and np.isfinite(points).all()
    heat = viz.occlusion(model, x, 0, patch=2)
    assert heat.dtype == dtype and ((heat >= 0) & (heat <= 1)).all()


def test_report_cli_writes_index_and_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from fastconv import __main__ as cli

    out = tmp_path / "report"
    assert cli.main(["--epochs", "1", "--batch-size", "64", "--threads", "1", "--report", str(out)]) == 0
    index = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', index)
    assert {"history.png", "confusion.png", "filters.png", "activations.png", "tsne.png"} <= set(images)
    assert any(name.startswith("maps_") for name in images) and any(name.startswith("top_") for name in images)
    for name in images:
        assert os.path.getsize(out / name) > 1000
    assert "http" not in index  # offline: nothing fetched
