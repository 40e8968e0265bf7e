"""The private kernels check their arrays on entry: a workspace, output or weight array of
the wrong shape is a ValueError naming it, raised before any thread runs (never a write
out of bounds). Each case calls a kernel as its Python caller does, with one array wrong."""
import numpy as np
import pytest

from fastconv import _direct, _im2col, _winograd
from fastconv import _validation as v
from fastconv._kernels import conv_gemm, im2col, pooling, runnable_builds

F32 = np.float32


def geometry(H=8, W=8, k=3, stride=1, padding=1, dilation=1):
    return v.conv_geometry((H, W), k, stride, padding, dilation)


@pytest.fixture(params=runnable_builds("conv_direct"), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def direct(request):
    return request.param


def test_geometry_struct_needs_every_field(direct):
    g = geometry().struct()
    del g["out_w"]
    x = np.zeros((1, 2, 8, 8), F32)
    with pytest.raises(ValueError, match="out_w"):
        im2col.im2col(x, np.empty((1, 18, 64), F32), g, 1)


def _direct_forward_args(direct, g, N=2, C=4, K=6):
    plan = direct.ForwardPlan(C * g.stride_h * g.stride_w, *_direct._plane_shape(g, 3), 3, False)
    return dict(x=np.zeros((N, C, 8, 8), F32), weight=np.zeros((K, C * 9), F32), bias=np.zeros(K, F32),
                out=np.empty((N, K, g.out_h, g.out_w), F32), plan=plan,
                workspace=np.empty((2, plan.size), F32))


@pytest.mark.parametrize("wrong, value, message", [
    ("out", np.empty((2, 6, 8, 7), F32), "out must have shape"),
    ("weight", np.zeros((6, 35), F32), "weight must have shape"),
    ("bias", np.zeros(5, F32), "bias must have shape"),
    ("workspace", np.empty((1, 10), F32), "workspace must be at least"),
])
def test_direct_forward_checks(direct, wrong, value, message):
    g = geometry()
    args = _direct_forward_args(direct, g)
    args[wrong] = value
    with pytest.raises(ValueError, match=message):
        direct.conv2d_forward(args["x"], args["weight"], args["bias"], args["out"], g.struct(), 1, args["plan"],
                              args["workspace"], 2)


def test_direct_forward_checks_plan_and_groups(direct):
    g = geometry()
    args = _direct_forward_args(direct, g)
    other = direct.ForwardPlan(4, *_direct._plane_shape(geometry(k=5, padding=2), 3), 3, False)
    with pytest.raises(ValueError, match="plan"):
        direct.conv2d_forward(args["x"], args["weight"], args["bias"], args["out"], g.struct(), 1, other,
                              np.empty((2, other.size), F32), 2)
    with pytest.raises(ValueError, match="groups=3"):
        direct.conv2d_forward(args["x"], args["weight"], args["bias"], args["out"], g.struct(), 3, args["plan"],
                              args["workspace"], 2)


def test_direct_backward_checks(direct):
    g = geometry(stride=2)
    x = np.zeros((2, 4, 8, 8), F32)
    w = np.zeros((6, 4, 3, 3), F32)
    go = np.zeros((2, 6, g.out_h, g.out_w), F32)
    row_len = direct.grad_x_row_len(2, g.out_w, 3, 1, 8, 1)
    with pytest.raises(ValueError, match="workspace must be at least"):
        direct.conv2d_grad_x(go, w, np.empty_like(x), g.struct(), 1, np.empty((2, row_len - 1), F32), 1, 2)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        direct.conv2d_grad_x(np.zeros((2, 6, g.out_h, g.out_w - 1), F32), w, np.empty_like(x), g.struct(), 1, np.empty((2, row_len), F32), 1, 2)
    size = direct.grad_weight_workspace(3, 3, direct.packed_row_len(2, g.out_w, 3, 1), False)
    with pytest.raises(ValueError, match="workspace must be at least"):
        direct.conv2d_grad_weight(go, x, np.empty_like(w), g.struct(), 1, np.empty((1, size), F32), 2)
    with pytest.raises(ValueError, match="grad_weight must have shape"):
        direct.conv2d_grad_weight(go, x, np.empty((6, 4, 3, 2), F32), g.struct(), 1, np.empty((2, size), F32), 2)
    # depthwise grad_weight on the forward's planes
    plan = direct.ForwardPlan(4, *_direct._plane_shape(g, 2), 2, False)
    size = direct.grad_weight_planes_workspace(plan, False)
    gw = np.zeros((4, 1, 3, 3), F32)
    go4 = np.zeros((2, 4, g.out_h, g.out_w), F32)
    with pytest.raises(ValueError, match="workspace must be at least"):
        direct.conv2d_grad_weight_planes(go4, x, gw, g.struct(), 4, plan, np.empty((2, size - 1), F32), 2)
    with pytest.raises(ValueError, match="one channel per group"):
        direct.conv2d_grad_weight_planes(go4, x, gw, g.struct(), 2, plan, np.empty((2, size), F32), 2)


def test_correlate2d_checks_its_workspace(direct):
    x, k = np.zeros((9, 9), F32), np.zeros((3, 3), F32)
    with pytest.raises(ValueError, match="workspace must be at least"):
        direct.correlate2d(x, k, np.empty((9, 9), F32), 1, 1, 9, 3, np.empty((2, 3 * 11 - 1), F32), 2)


def test_im2col_kernels_check_the_columns():
    g = geometry()
    x = np.zeros((2, 3, 8, 8), F32)
    for cols in (np.empty((2, 27, 63), F32), np.empty((2, 26, 64), F32), np.empty((1, 27, 64), F32)):
        with pytest.raises(ValueError, match="cols must have shape"):
            im2col.im2col(x, cols, g.struct(), 1)
        with pytest.raises(ValueError, match="cols must have shape"):
            im2col.col2im(cols, np.zeros_like(x), g.struct(), 1)


def test_conv_gemm_checks():
    g = geometry()
    x = np.zeros((2, 4, 8, 8), F32)
    w = np.zeros((1, 6, 36), F32)
    rows = _im2col._band_rows(36, g, 4)
    ws = _im2col._workspace(2, 36, rows, g, F32)
    out = np.empty((2, 6, 64), F32)
    with pytest.raises(ValueError, match="workspace must be at least"):
        conv_gemm.conv2d_forward(x, w, out, np.empty((2, ws.shape[1] - 1), F32), g.struct(), rows, 2)
    with pytest.raises(ValueError, match="output must have shape"):
        conv_gemm.conv2d_forward(x, w, np.empty((2, 6, 63), F32), ws, g.struct(), rows, 2)
    with pytest.raises(ValueError, match="weight must be"):
        conv_gemm.conv2d_forward(x, np.zeros((1, 6, 35), F32), out, ws, g.struct(), rows, 2)
    parts = np.zeros((2, 1, 6, 36), F32)
    with pytest.raises(ValueError, match="grad_w_parts must have a part"):
        conv_gemm.conv2d_backward(x, w, out, np.zeros_like(x), parts[:1], ws, g.struct(), rows, 2)
    with pytest.raises(ValueError, match="grad_x must have shape"):
        conv_gemm.conv2d_backward(x, w, out, np.zeros_like(x[:1]), parts, ws, g.struct(), rows, 2)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        conv_gemm.conv2d_grad_x(w, out[:1], np.zeros_like(x), ws, g.struct(), rows, 2)
    with pytest.raises(ValueError, match="workspace must be at least"):
        conv_gemm.conv2d_grad_x(w, out, np.zeros_like(x), ws[:1], g.struct(), rows, 2)
    # bands too short: bands two apart would scatter into the same input rows
    tall = geometry(k=7, padding=3)
    ws = _im2col._workspace(2, 4 * 49, 1, tall, F32)
    with pytest.raises(ValueError, match="band_rows must be at least"):
        conv_gemm.conv2d_backward(x, np.zeros((1, 6, 4 * 49), F32), out, np.zeros_like(x),
                                  np.zeros((2, 1, 6, 4 * 49), F32), ws, tall.struct(), 1, 2)
    with pytest.raises(ValueError, match="band_rows must be at least"):
        conv_gemm.conv2d_grad_x(np.zeros((1, 6, 4 * 49), F32), out, np.zeros_like(x), ws, tall.struct(), 1, 2)


def test_winograd_checks_its_workspace():
    x = np.zeros((1, 4, 8, 8), F32)
    U, Kp = _winograd.transform_weights(np.zeros((4, 4, 3, 3), F32), 1)
    size = _winograd.workspace_values(4, Kp, F32)
    with pytest.raises(ValueError, match="workspace"):
        _winograd.kernel.conv2d_forward(x, U, Kp, np.zeros(4, F32), np.empty((1, 4, 8, 8), F32), 1, 1, 1,
                                        np.empty((1, size - 1), F32), 1)
    with pytest.raises(ValueError, match="num_threads must be at least 1"):
        _winograd.kernel.conv2d_forward(x, U, Kp, np.zeros(4, F32), np.empty((1, 4, 8, 8), F32), 1, 1, 1,
                                        np.empty((0, size), F32), 0)


def test_pooling_kernels_check_their_arrays():
    g = v.pool_geometry((8, 8), 3, 2, 1, 1, False)
    x = np.zeros((5, 8, 8), F32)
    out = np.empty((5, g.out_h, g.out_w), F32)
    idx = np.empty(out.shape, np.int64)
    with pytest.raises(ValueError, match="out must have shape"):
        pooling.max_pool2d(x, out[:4], idx, True, g.struct(), 2)
    with pytest.raises(ValueError, match="indices must have shape"):
        pooling.max_pool2d(x, out, np.empty((5, g.out_h, g.out_w - 1), np.int64), True, g.struct(), 2)
    with pytest.raises(ValueError, match="out must have shape"):
        pooling.avg_pool2d(x, np.empty((5, g.out_h, g.out_w - 1), F32), g.struct(), True, 0, 2)
    with pytest.raises(ValueError, match="scratch must be at least"):
        pooling.avg_pool2d_backward(out, np.empty_like(x), np.empty((1, g.out_w), F32), g.struct(), True, 0, 2)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        pooling.avg_pool2d_backward(np.empty((5, g.out_h - 1, g.out_w), F32), np.empty_like(x), np.empty((2, g.out_w), F32), g.struct(), True, 0, 2)
    go = out.reshape(5, -1)
    with pytest.raises(ValueError, match="indices must have shape"):
        pooling.max_pool2d_backward(go, np.empty((5, go.shape[1] - 1), np.int64), np.empty((5, 64), F32), 2)
    for build in runnable_builds("adaptive_pool"):
        with pytest.raises(ValueError, match="out must have shape"):
            build.global_avg_pool2d(x.reshape(5, 64), np.empty(4, F32), 2)
        with pytest.raises(ValueError, match="out must have shape"):
            build.global_max_pool2d(x.reshape(5, 64), np.empty(4, F32), np.empty(5, np.int64), True, 2)
        with pytest.raises(ValueError, match="indices must have shape"):
            build.global_max_pool2d(x.reshape(5, 64), np.empty(5, F32), np.empty(4, np.int64), True, 2)


def test_direct_grad_weight_tiles_checks(direct):
    g = geometry(stride=2)
    x = np.zeros((2, 4, 8, 8), F32)
    go = np.zeros((2, 6, g.out_h, g.out_w), F32)
    plan = direct.ForwardPlan(4 * 4, *_direct._plane_shape(g, 2), 2, False)
    size = direct.grad_weight_tiles_workspace(plan, g.out_w, False)
    ldg = direct.grad_weight_block(False)
    parts = np.zeros((2, 4 * 9 * ldg), F32)
    work = np.empty((2, size), F32)
    direct.conv2d_grad_weight_tiles(go, x, parts, g.struct(), 1, 6, plan, work, 2)    # as the caller does
    with pytest.raises(ValueError, match="workspace must be at least"):
        direct.conv2d_grad_weight_tiles(go, x, parts, g.struct(), 1, 6, plan, np.empty((2, size - 1), F32), 2)
    with pytest.raises(ValueError, match="parts must be at least"):
        direct.conv2d_grad_weight_tiles(go, x, np.zeros((2, 4 * 9 * ldg - 1), F32), g.struct(), 1, 6, plan, work, 2)
    with pytest.raises(ValueError, match="parts must be at least"):
        direct.conv2d_grad_weight_tiles(go, x, parts[:1], g.struct(), 1, 6, plan, work, 2)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        direct.conv2d_grad_weight_tiles(go, x, parts, g.struct(), 1, 5, plan, work, 2)
    with pytest.raises(ValueError, match="groups=4"):
        direct.conv2d_grad_weight_tiles(go, x, parts, g.struct(), 4, 6, plan, work, 2)
    other = direct.ForwardPlan(4, *_direct._plane_shape(geometry(k=5, padding=2), 2), 2, False)
    with pytest.raises(ValueError, match="plan"):
        direct.conv2d_grad_weight_tiles(go, x, parts, g.struct(), 1, 6, other, work, 2)


def test_direct_forward_shuffle_checks(direct):
    g = geometry()
    args = _direct_forward_args(direct, g)
    size = direct.forward_shuffle_workspace(args["plan"], 6, g.out_w)
    out = np.empty((2, 3, 2 * g.out_h, 2 * g.out_w), F32)
    place = np.array([(k % 3, k // 3, g.out_h, 1, g.out_w) for k in range(6)], dtype=np.intp)
    work = np.empty((2, size), F32)

    def call(weight=args["weight"], bias=args["bias"], out=out, place=place, sh=2, work=work, packed=None):
        direct.conv2d_forward_shuffle(args["x"], weight, bias, out, place, sh, 2, g.struct(), 1, args["plan"],
                                      work, 2, packed)

    call()                              # as the caller does
    for bad in [(3, 0, 1, 0, 1), (0, 0, g.out_h + 1, 0, 1), (0, 16, 1, 0, 1), (0, 0, 1, 2, g.out_w),
                (-1, 0, 1, 0, 1), (0, -1, 1, 0, 1)]:
        wrong = place.copy()
        wrong[4] = bad
        with pytest.raises(ValueError, match="place\\[4\\]"):
            call(place=wrong)
    with pytest.raises(ValueError, match="place must have shape"):
        call(place=place[:5])
    with pytest.raises(ValueError, match="place\\[0\\]"):
        call(sh=3)                      # row 0 + 7 * 3 is past out's 16 rows
    with pytest.raises(ValueError, match="out must have 2 images"):
        call(out=out[:1])
    with pytest.raises(ValueError, match="workspace must be at least"):
        call(work=np.empty((2, size - 1), F32))
    with pytest.raises(ValueError, match="weight must have shape"):
        call(weight=np.zeros((6, 35), F32))
    with pytest.raises(ValueError, match="bias must have shape"):
        call(bias=np.zeros(5, F32))
    with pytest.raises(ValueError, match="packed must be"):
        call(packed=np.zeros((3, 3), F32))
