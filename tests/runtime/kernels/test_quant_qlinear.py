"""Integer convolutions past float32's exact range, and the shared int8 helpers."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.runtime.kernels import contrib_quant, int8, qlinear, winograd
from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)


def run_ort(op, inputs, attrs, out_type):
    names = [f"i{k}" if a is not None else "" for k, a in enumerate(inputs)]
    inits = [
        numpy_helper.from_array(np.asarray(a), n)
        for k, (n, a) in enumerate(zip(names, inputs, strict=True))
        if a is not None and k
    ]
    x = inputs[0]
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)],
        "g",
        [helper.make_tensor_value_info("i0", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)],
        [helper.make_tensor_value_info("y", out_type, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"i0": x})[0]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("block", [None, 1])  # weights widened at once: all 8 rows, or 1
def test_conv_integer_past_float32_exact_range(monkeypatch, dtype, block):
    # extreme weights: K * 255 * 128 is far past 2^24, so the sums are split into chunks
    if block is not None:
        monkeypatch.setattr(qlinear, "_WIDENED_BLOCK", block)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (1, 192, 5, 5), endpoint=True).astype(dtype)
    w = np.where(rng.random((8, 192, 3, 3)) < 0.5, info.min, info.max).astype(dtype)
    xz, wz = np.array(info.max // 2 + 1, dtype), np.array(0, dtype)
    wg = qlinear._centered_weights(w, wz).reshape(1, 8, -1)
    starts, _ = qlinear._chunk_plan(w, lambda: wg.reshape(8, -1), qlinear._span(x.dtype, int(xz)))
    assert len(starts) > 1
    attrs = {"pads": [1, 1, 1, 1]}
    got = resolve("", "ConvInteger", 13).fn(x, w, xz, wz, **attrs)
    want = run_ort("ConvInteger", [x, w, xz, wz], attrs, TensorProto.INT32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_qlinear_conv_past_float32_exact_range(dtype):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (1, 128, 4, 4), endpoint=True).astype(dtype)
    w = rng.integers(info.min, info.max, (6, 128, 3, 3), endpoint=True).astype(dtype)
    b = rng.integers(-(1 << 20), 1 << 20, 6).astype(np.int32)
    zero = np.array(info.max // 2, dtype)
    inputs = [x, np.array(0.02, np.float32), zero, w, np.full(6, 0.01, np.float32)]
    inputs += [np.full(6, zero, dtype), np.array(40.0, np.float32), zero, b]
    got = resolve("", "QLinearConv", 13).fn(*inputs, pads=[1, 1, 1, 1])
    want = run_ort(
        "QLinearConv",
        inputs,
        {"pads": [1, 1, 1, 1]},
        helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
    )
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("per_channel", [False, True])
def test_chunked_conv_widens_its_weights_a_chunk_at_a_time(monkeypatch, per_channel):
    # a 512-channel 3x3 layer's float32 copy is 9.4 MB: neither the row sums nor the
    # chunks may make one of the whole layer (the most int8 ResNet-18's first run held)
    def whole_layer(*args):
        raise AssertionError("the whole layer was widened to float32")

    monkeypatch.setattr(qlinear, "_centered_weights", whole_layer)
    monkeypatch.setattr(qlinear, "_PLAN_ELEMENTS", 1 << 10)  # row sums in many blocks
    x = rng.integers(0, 255, (1, 192, 5, 5), endpoint=True).astype(np.uint8)
    w = np.where(rng.random((8, 192, 3, 3)) < 0.5, -127, 127).astype(np.int8)
    wz = rng.integers(-3, 4, 8).astype(np.int8) if per_channel else np.array(2, np.int8)
    xz = np.array(128, np.uint8)
    acc, _ = qlinear.integer_conv(x, xz, w, wz, "NOTSET", None, 1, [3, 3], [1, 1, 1, 1], None)
    assert acc.dtype == np.float64  # chunked
    np.testing.assert_array_equal(acc, _exact_conv3x3(x, xz, w, wz, [1, 1, 1, 1]))


def test_chunked_conv_reads_its_weights_once_to_plan(monkeypatch):
    # the bound over the whole K and the chunk plan come from one set of block sums: a
    # first run reads the weights once for those (and a few blocks again around where a
    # chunk ends) and once more to multiply them, where it used to read them three times
    reads = []
    into = qlinear._CenteredRows.into

    def counted(self, index, out=None):
        part = into(self, index, out)
        reads.append(part.size)
        return part

    monkeypatch.setattr(qlinear._CenteredRows, "into", counted)
    x = rng.integers(0, 255, (1, 512, 5, 5), endpoint=True).astype(np.uint8)
    w = np.where(rng.random((8, 512, 3, 3)) < 0.5, -127, 127).astype(np.int8)
    xz, wz = np.array(128, np.uint8), np.array(2, np.int8)
    args = ("NOTSET", None, 1, [3, 3], [1, 1, 1, 1], None)
    acc, _ = qlinear.integer_conv(x, xz, w, wz, *args)
    starts, _ = qlinear._chunk_plan(
        w, lambda: qlinear._CenteredRows(w.reshape(8, -1), wz), (128, 127)
    )
    assert len(starts) > 2  # chunked, at a block's middle at least once
    # at most three blocks' worth per chunk: where it starts, and twice where it ends
    ends = 3 * len(starts) * 8 * qlinear._PLAN_BLOCK
    assert w.size * 2 <= sum(reads) <= w.size * 2 + ends
    np.testing.assert_array_equal(acc, _exact_conv3x3(x, xz, w, wz, [1, 1, 1, 1]))


@pytest.mark.parametrize("order", ["C", "F"])  # F: a MatMul's weights, a row per column
@pytest.mark.parametrize("zero", ["none", "one", "per row"])
def test_row_sums_in_blocks_of_centered_weights(monkeypatch, order, zero):
    monkeypatch.setattr(qlinear, "_PLAN_ELEMENTS", 1 << 10)  # a few rows a block
    raw = np.asarray(rng.integers(-128, 128, (37, 300)).astype(np.int8), order=order)
    zeros = {"none": None, "one": np.array(5), "per row": rng.integers(-9, 9, 37)}[zero]
    centered = raw.astype(np.float64) - (0 if zeros is None else zeros.reshape(-1, 1))
    want = np.maximum(centered, 0).sum(axis=-1), np.maximum(-centered, 0).sum(axis=-1)
    rows = qlinear._CenteredRows(raw, zeros)
    np.testing.assert_array_equal(rows[3:9], centered[3:9])
    np.testing.assert_array_equal(rows[np.array([4, 1]), 7:20], centered[[4, 1], 7:20])
    got = qlinear._row_sums(rows)
    for g, wanted in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, wanted)


def test_integer_matmul_chunks_are_exact():
    a = np.full((2, 3000), 255.0, np.float32)
    b = np.full((3000, 2), -128.0, np.float32)
    got = int8.integer_matmul(a, b, 255, 128)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, np.full((2, 2), 3000 * 255 * -128))


@pytest.mark.parametrize("real", [0.3, 1e-3, 0.75, 2.5, 1.0 / 3.0, 7e-6])
def test_quantized_multiplier_matches_the_real_multiplier(real):
    multiplier, shift = int8.quantize_multiplier(real)
    assert (1 << 30) <= int(multiplier) < (1 << 31)
    assert abs(int(multiplier) * 2.0 ** (int(shift) - 31) - real) <= real * 2**-30
    acc = rng.integers(-(1 << 20), 1 << 20, 1000).astype(np.int32)
    got = int8.multiply_by_quantized_multiplier(acc, multiplier, shift).astype(np.int64)
    # TFLite rounds the high product and the shift each to nearest: within one of exact
    exact = acc.astype(np.float64) * int(multiplier) * 2.0 ** (int(shift) - 31)
    assert np.abs(got - exact).max() <= 1
    np.testing.assert_array_equal(got[acc == 0], 0)


def test_lookup_table_covers_every_code():
    for dtype in (np.uint8, np.int8):
        table = int8.lookup_table(lambda v: v, 0.1, 3, 0.1, 3, np.dtype(dtype))
        codes = np.arange(256).astype(np.uint8).view(dtype)
        np.testing.assert_array_equal(int8.apply_table(codes, table), codes)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
@pytest.mark.parametrize("zero_point", [-128, -7, 0, 3, 128, 255])
def test_round_saturate_is_rint_add_clip(dtype, zero_point):
    # ties (half to even), values past the range by far, and every code in between
    low, high = int8.int_range(np.dtype(dtype))
    if not low <= zero_point <= high:
        pytest.skip("zero point outside the type")
    halves = np.arange(-600, 600, dtype=np.float32) + np.float32(0.5)
    spread = np.random.default_rng(0).normal(0, 300, 5000).astype(np.float32)
    far = np.array([-1e30, -3e7, -5e6, 4.2e6, 9e6, 1e30, np.inf, -np.inf], np.float32)
    y = np.concatenate([halves, spread, far, np.arange(-70000, 70000, 7, dtype=np.float32)])
    expected = np.clip(np.rint(y.astype(np.float64)) + zero_point, low, high).astype(dtype)
    got = int8.round_saturate(y.copy(), zero_point, np.dtype(dtype))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)


def test_round_saturate_keeps_the_layout_of_a_transposed_view():
    y = np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(0, 2, 1) * np.float32(3.5)
    got = int8.round_saturate(y.copy(order="K"), -5, np.dtype(np.int8))
    np.testing.assert_array_equal(got, np.clip(np.rint(y) - 5, -128, 127).astype(np.int8))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("strides", [[1, 1], [2, 2], [2, 1]])  # strided: every other pixel
def test_pointwise_qlinear_conv_folds_bias_and_zero_point_exactly(
    dtype, channels_last, big, strides
):
    # a 1x1 convolution is one matmul on the uncentered input with the bias (less zx times
    # the weight row sums) in an extra column; a bias or weights too big for float32 take
    # the general path. Both must equal the general path bit for bit, in either layout.
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (2, 24, 5, 6), endpoint=True).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w = rng.integers(-127, 127, (10, 24, 1, 1), endpoint=True).astype(np.int8)
    b = rng.integers(-(1 << 25) if big else -5000, 1 << 25 if big else 5000, 10)
    x_zero, w_zero = np.array(info.max // 3, dtype), np.arange(10, dtype=np.int8) - 4
    picked = x[:, :, :: strides[0], :: strides[1]]
    acc = qlinear.pointwise_conv(picked, x_zero, w, w_zero, b.astype(np.int32))
    want = qlinear._biased_conv(
        x, x_zero, w, w_zero, b.astype(np.int32), "NOTSET", None, 1, None, None, strides
    )
    assert (acc is None) == big  # past 2^24: the general path
    if not big:
        assert acc.dtype == np.float32
        np.testing.assert_array_equal(acc, want)
        assert acc.transpose(0, 2, 3, 1).flags.c_contiguous == channels_last
    inputs = [x, np.array(0.02, np.float32), x_zero, w, np.full(10, 0.01, np.float32), w_zero]
    inputs += [np.array(0.5, np.float32), np.array(info.max // 2, dtype), b.astype(np.int32)]
    got = resolve("", "QLinearConv", 13).fn(*inputs, strides=strides)
    scale = (np.float32(0.02) * np.full(10, 0.01, np.float32) / np.float32(0.5)).astype(np.float32)
    expected = int8.requantize(want, scale.reshape(-1, 1, 1), info.max // 2, np.dtype(dtype))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("a_type", [np.int8, np.uint8])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("widened", [1 << 20, 100])  # 100: 41 x 9 weights, 3 columns a time
@pytest.mark.parametrize("stored_transposed", [False, True])  # Gemm's transB
def test_folded_matmul_equals_the_centered_product_plus_bias(
    monkeypatch, a_type, big, widened, stored_transposed
):
    # the uncentered product with za and the bias folded into an extra row of the weights
    # is the exact (a - za) @ (b - zb) + bias; past 2^24 it declines (None)
    monkeypatch.setattr(qlinear, "_WIDENED_ELEMENTS", widened)
    info = np.iinfo(a_type)
    a = rng.integers(info.min, info.max, (3, 7, 40), endpoint=True).astype(a_type)
    b = rng.integers(-128, 127, (40, 9), endpoint=True).astype(np.int8)
    if stored_transposed:
        b = np.ascontiguousarray(b.T).T
    bias = rng.integers(-(1 << 25) if big else -9000, 1 << 25 if big else 9000, 9)
    za, zb = np.array(info.max // 4, a_type), (np.arange(9) - 3).astype(np.int8)
    got = qlinear.folded_matmul(a, za, b, zb, bias.astype(np.int32))
    if big:
        assert got is None
        return
    want = (a.astype(np.int64) - int(za)) @ (b.astype(np.int64) - zb) + bias
    assert got is not None and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert qlinear.folded_matmul(a, np.arange(7).astype(a_type), b, zb) is None  # per row za


def test_qgemm_with_bias_matches_the_general_path():
    # QGemm's folded path against the centered product plus bias, requantized the same way
    a = rng.integers(-128, 127, (16, 32), endpoint=True).astype(np.int8)
    b = rng.integers(-128, 127, (32, 12), endpoint=True).astype(np.int8)
    c = rng.integers(-20000, 20000, 12).astype(np.int32)
    args = [a, np.array(0.03, np.float32), np.array(-9, np.int8), b]
    args += [np.full(12, 0.02, np.float32), np.zeros(12, np.int8), c]
    args += [np.array(0.4, np.float32), np.array(4, np.int8)]
    got = contrib_quant.q_gemm_1(*args)
    acc = (a.astype(np.int64) + 9) @ b.astype(np.int64) + c
    scale = np.float32(0.03) * np.full(12, 0.02, np.float32) / np.float32(0.4)
    want = int8.requantize(acc.astype(np.float32), scale, 4, np.dtype(np.int8))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize(("strides", "pads"), [([1, 1], [1, 1, 1, 1]), ([2, 2], [0, 1, 2, 1])])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_pads_with_the_zero_point_and_matches_the_general_path(
    dtype, strides, pads, channels_last
):
    # uncentered, padded with the zero point, zx times each filter's sum taken off through
    # the bias: the same sums as centering first, in the depthwise layout (channels-last)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (2, 6, 7, 9), endpoint=True).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w = rng.integers(-128, 127, (6, 1, 3, 3), endpoint=True).astype(np.int8)
    x_zero, w_zero = np.array(info.max // 3, dtype), (np.arange(6) - 2).astype(np.int8)
    geometry = ("NOTSET", None, 6, None, pads, strides)
    found = qlinear.uncentered_conv(x, x_zero, w, w_zero, None, *geometry)
    assert found is not None
    want, _ = qlinear.integer_conv(x, x_zero, w, w_zero, *geometry)
    np.testing.assert_array_equal(found[0], want)
    assert found[1] >= np.abs(want).max()
    assert found[0].strides[1] == found[0].itemsize  # channels-last: the depthwise kernel's
    # two channels per filter (not depthwise): the general product, the same sums
    grouped = ("NOTSET", None, 3, None, pads, strides)
    w2 = rng.integers(-128, 127, (3, 2, 3, 3), endpoint=True).astype(np.int8)
    two = qlinear.uncentered_conv(x, x_zero, w2, w_zero[:3], None, *grouped)
    assert two is not None
    want_two, _ = qlinear.integer_conv(x, x_zero, w2, w_zero[:3], *grouped)
    np.testing.assert_array_equal(two[0], want_two)
    # the bias joins the sums (tiled along the channels-last rows), exactly
    bias = rng.integers(-(1 << 20), 1 << 20, 6).astype(np.int32)
    biased = qlinear.uncentered_conv(x, x_zero, w, w_zero, bias, *geometry)
    assert biased is not None
    np.testing.assert_array_equal(biased[0], want + bias.reshape(-1, 1, 1))
    assert biased[1] >= np.abs(biased[0]).max()
    # past float32's exact range with it, the uncentered path steps aside
    past = np.full(6, 1 << 24, np.int32)
    assert qlinear.uncentered_conv(x, x_zero, w, w_zero, past, *geometry) is None


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_scale_channels_is_the_broadcast_product(per_channel, channels_last):
    y = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    if channels_last:
        y = np.ascontiguousarray(y.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    m = rng.uniform(0.1, 2, (5, 1, 1)).astype(np.float32) if per_channel else np.float32(0.3)
    want = y * m
    qlinear._scale_channels(y, m)
    np.testing.assert_array_equal(y, want)


def _chunk_starts_by_scan(w, span):
    """The chunk starts found column by column: a new chunk wherever the partial sum bound
    of the current one would reach 2^24 (the plan's definition, without its shortcuts)."""
    below, above = span
    starts, p, n = [0], np.zeros(w.shape[0]), np.zeros(w.shape[0])
    for col in range(w.shape[1]):
        p2, n2 = p + np.maximum(w[:, col], 0), n + np.maximum(-w[:, col], 0)
        over = np.maximum(above * p2 + below * n2, below * p2 + above * n2).max() >= 1 << 24
        if over and col > starts[-1]:
            starts.append(col)
            p, n = np.maximum(w[:, col], 0), np.maximum(-w[:, col], 0)
        else:
            p, n = p2, n2
    return tuple(starts)


@pytest.mark.parametrize("seed", range(8))
def test_chunk_plan_matches_a_column_scan(seed):
    # the plan sums blocks of columns and scans only the block where a bound is crossed
    gen = np.random.default_rng(seed)
    rows, k = int(gen.integers(1, 300)), int(gen.integers(1, 3000))
    limit = int(gen.choice([8, 127, 255]))
    w = gen.integers(-limit, limit + 1, (rows, k)).astype(np.float32)
    if seed % 2:
        w = np.abs(w)  # one-signed weights: the bound grows fastest
    span = (int(gen.choice([0, 128])), 255)
    starts, _ = qlinear._chunk_plan(np.empty(1), lambda: w, span)
    assert starts == _chunk_starts_by_scan(w, span)


@pytest.mark.parametrize("k", [9, 4608, 70000])  # 70000 x 255 passes 2^24: float64 sums
@pytest.mark.parametrize("span", [(0, 255), (128, 127)])
def test_weight_reach_is_the_whole_row_bound(k, span):
    w = rng.integers(-255, 256, (3, k)).astype(np.float32)
    w[0] = np.abs(w[0])  # one-signed
    p, n = (
        np.maximum(w, 0).sum(axis=1, dtype=np.int64),
        np.maximum(-w, 0).sum(axis=1, dtype=np.int64),
    )
    below, above = span
    want = int(np.maximum(above * p + below * n, below * p + above * n).max())
    assert qlinear._weight_reach(np.empty(1), lambda: w, span) == want


def _exact_conv3x3(x, x_zero, w, w_zero, pads):
    """The convolution in int64, tap by tap: the definition, for the fast paths to meet."""
    xs = x.astype(np.int64) - int(x_zero)
    ws = w.astype(np.int64) - np.asarray(w_zero, np.int64).reshape(-1, 1, 1, 1)
    xp = np.pad(xs, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh, ow = xp.shape[2] - 2, xp.shape[3] - 2
    return sum(
        np.einsum("nchw,kc->nkhw", xp[:, :, i : i + oh, j : j + ow], ws[:, :, i, j])
        for i in range(3)
        for j in range(3)
    )


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("weights", ["random", "extreme"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias_bits", [20, 30])
def test_winograd_qlinear_conv_is_exact(dtype, weights, channels_last, bias_bits):
    # the transformed tiles reach 4x the input and the filter 9x the weights, so extreme
    # weights need their products over channels split into chunks; with a 2^30 bias the
    # sums pass 2^24 and round once, as onnxruntime's int32 accumulator converts
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (2, 48, 11, 12), endpoint=True).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if weights == "extreme":
        w = np.full((40, 48, 3, 3), 127, np.int8)
        w_zero = np.zeros(40, np.int8)
    else:
        w = rng.integers(-128, 127, (40, 48, 3, 3), endpoint=True).astype(np.int8)
        w_zero = rng.integers(-3, 3, 40, endpoint=True).astype(np.int8)
    x_zero = np.array(info.max // 2, dtype)
    b = rng.integers(-(1 << bias_bits), 1 << bias_bits, 40).astype(np.int32)
    pads = [1, 0, 1, 1]
    u4, _ = qlinear._winograd_filter(w, w_zero)
    starts = qlinear._winograd_starts(u4, qlinear._span(x.dtype, int(x_zero)))
    assert starts is not None and (len(starts) > 1) == (weights == "extreme")
    got = qlinear._winograd_conv(x, x_zero, w, w_zero, b, "NOTSET", None, 1, pads, None)
    want = _exact_conv3x3(x, x_zero, w, w_zero, pads) + b.reshape(-1, 1, 1)
    # exact up to the one rounding to float32 that onnxruntime's int32 accumulator takes
    np.testing.assert_array_equal(got, want.astype(np.float32))


def _recorded(monkeypatch, name: str) -> list:
    """What winograd's ``name`` returns, call by call, as it goes on working."""
    returned: list = []
    real = getattr(winograd, name)

    def spy(*args):
        returned.append(real(*args))
        return returned[-1]

    monkeypatch.setattr(winograd, name, spy)
    return returned


def _assert_winograd_exact(x, x_zero, w, w_zero, b):
    got = qlinear._winograd_conv(x, x_zero, w, w_zero, b, "NOTSET", None, 1, [1, 1, 1, 1], None)
    want = _exact_conv3x3(x, x_zero, w, w_zero, [1, 1, 1, 1]) + b.reshape(-1, 1, 1)
    # exact up to the one rounding to float32 that onnxruntime's int32 accumulator takes
    np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("bias_bits", [20, 23])
def test_winograd_output_transform_in_float32_only_where_exact(monkeypatch, bias_bits):
    # activations near their zero point (as after a ReLU): the products' actual extremes
    # let the output transform run in float32; a bias of 2^23 (4x: 2^25) sends it back to
    # float64. Exact either way.
    x = rng.integers(-8, 8, (1, 48, 11, 12), endpoint=True).astype(np.int8)
    w = rng.integers(-128, 127, (40, 48, 3, 3), endpoint=True).astype(np.int8)
    w_zero = np.zeros(40, np.int8)
    x_zero = np.array(0, np.int8)
    b = rng.integers(-(1 << bias_bits), 1 << bias_bits, 40).astype(np.int32)
    b[0] = (1 << bias_bits) - 1
    chosen = _recorded(monkeypatch, "_transform_dtype")
    _assert_winograd_exact(x, x_zero, w, w_zero, b)
    assert set(chosen) == {np.float32 if bias_bits == 20 else np.float64}


def test_winograd_takes_one_product_where_the_actual_tiles_fit(monkeypatch):
    # weights at the extreme need chunks for the worst input; the top half of this image
    # stays near its zero point (as after a ReLU), so its block of tiles takes one float32
    # product, while the bottom half, at the largest input, still needs the chunks. Exact.
    rows = winograd._block_rows(40, 48, 40)  # tile rows (two output rows each) a block
    x = np.full((1, 48, 4 * rows, 80), 127, np.int8)  # two blocks
    x[:, :, : 2 * rows + 2] = rng.integers(-3, 3, (1, 48, 2 * rows + 2, 80), endpoint=True)
    w = np.full((40, 48, 3, 3), 127, np.int8)
    w[:, ::2] = -128
    w_zero, x_zero = np.zeros(40, np.int8), np.array(0, np.int8)
    b = rng.integers(-(1 << 20), 1 << 20, 40).astype(np.int32)
    starts = qlinear._winograd_starts(qlinear._winograd_filter(w, w_zero)[0], (128, 127))
    assert starts is not None and len(starts) > 1
    fits = _recorded(monkeypatch, "_tiles_fit")
    _assert_winograd_exact(x, x_zero, w, w_zero, b)
    assert fits == [True, False]


def test_winograd_plans_chunks_only_for_a_block_that_does_not_fit(monkeypatch):
    # weights at the extreme need chunks for the worst input, but inputs near their zero
    # point fit every block in one product: the worst-case plan is never made
    x = rng.integers(-3, 3, (1, 48, 12, 12), endpoint=True).astype(np.int8)
    w = np.full((40, 48, 3, 3), 127, np.int8)
    w_zero, x_zero = np.zeros(40, np.int8), np.array(0, np.int8)
    b = rng.integers(-(1 << 20), 1 << 20, 40).astype(np.int32)

    def no_plan(*args):
        raise AssertionError("the worst-case chunk plan was made")

    monkeypatch.setattr(qlinear, "_plan_winograd_chunks", no_plan)
    _assert_winograd_exact(x, x_zero, w, w_zero, b)


def test_winograd_declines_a_layer_needing_too_many_chunks(monkeypatch):
    # the largest inputs need chunks; more than _WINOGRAD_CHUNKS and the layer goes to
    # im2col instead, still exact
    x = np.full((1, 48, 12, 12), 127, np.int8)
    w = np.full((40, 48, 3, 3), 127, np.int8)
    w_zero, x_zero = np.zeros(40, np.int8), np.array(0, np.int8)
    b = rng.integers(-(1 << 20), 1 << 20, 40).astype(np.int32)
    monkeypatch.setattr(qlinear, "_WINOGRAD_CHUNKS", 1)
    args = (x, x_zero, w, w_zero, b, "NOTSET", None, 1, [1, 1, 1, 1], None)
    assert qlinear._winograd_conv(*args) is None
    got = qlinear._biased_conv(*args[:6], None, 1, [3, 3], [1, 1, 1, 1], None)
    want = _exact_conv3x3(x, x_zero, w, w_zero, [1, 1, 1, 1]) + b.reshape(-1, 1, 1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("weights", ["random", "small", "extreme"])
@pytest.mark.parametrize("x_span", [(0, 255), (128, 127), (0, 127)])
def test_winograd_fits_any_input_where_one_chunk_is_planned(weights, x_span):
    w = {
        "random": rng.integers(-128, 127, (40, 48, 3, 3), endpoint=True),
        "small": rng.integers(-8, 8, (40, 48, 3, 3), endpoint=True),
        "extreme": np.full((40, 48, 3, 3), -128),
    }[weights].astype(np.int8)
    u4, _ = qlinear._winograd_filter(w, None)
    one_chunk = qlinear._plan_winograd_chunks(u4, x_span) == (0,)
    assert qlinear._fits_any_input(u4, x_span) == one_chunk


@pytest.mark.parametrize("channels", [48, 7400])  # 7400 x 9 x 255 passes 2^24: float64 sums
def test_winograd_column_sums_are_the_definition(channels):
    # down each (C, K) plane's columns, as _fits_any_input bounds every channel at once
    u4 = rng.integers(-2295, 2296, (16, channels, 3)).astype(np.float32)
    u4[:, :, 0] = np.abs(u4[:, :, 0])  # one-signed columns
    positive, negative = qlinear._column_sums(u4)
    exact = u4.astype(np.int64)
    np.testing.assert_array_equal(positive, np.maximum(exact, 0).sum(axis=1))
    np.testing.assert_array_equal(negative, np.maximum(-exact, 0).sum(axis=1))


def test_float32_fits_up_to_two_to_the_24():
    # Cauchy-Schwarz: |a . b| <= ||a|| ||b||, and float32 is exact below 2^24
    assert int8.fits_float32(np.array([4095.0**2]), np.array([4096.0**2]), 1)
    assert not int8.fits_float32(np.array([4096.0**2]), np.array([4096.0**2]), 1)
    # each a pairs with its own b (Winograd's tap pairs), not the largest with the largest
    assert int8.fits_float32(np.array([1.0, 4096.0**2]), np.array([4096.0**2, 1.0]), 1)
    # sums of many squares taken in float32 keep a margin for their rounding
    assert int8.fits_float32(np.array([4095.9**2]), np.array([4096.0**2]), 1)
    assert not int8.fits_float32(np.array([4095.9**2]), np.array([4096.0**2]), 1 << 12)


def test_winograd_keeps_to_its_memory_cap(monkeypatch):
    # the float32 filter is 28x the int8 weights: past the cap the layer stays im2col
    w = rng.integers(-3, 3, (64, 64, 3, 3), endpoint=True).astype(np.int8)
    assert qlinear._winograd_filter(w, None)[0] is not None
    monkeypatch.setattr(qlinear, "_WINOGRAD_BYTES", w.size * 16 // 9 * 4 - 1)
    assert qlinear._winograd_filter(w, None) == (None, None)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("ws", "attrs"),
    [
        ((8, 6, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # ResNet's strided 3x3
        ((8, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),  # a stem (image columns)
        ((8, 3, 3, 2), {"pads": [0, 1, 2, 0], "group": 2, "dilations": [2, 1]}),
    ],
)
@pytest.mark.parametrize("kept", [True, False])  # float32 weights kept, or widened per call
def test_uncentered_conv_matches_the_centered_sums(
    monkeypatch, dtype, channels_last, ws, attrs, kept
):
    # padded with the zero point and uncentered, zx times each filter's sum taken off
    # through the bias: the general path's exact sums plus the bias, bit for bit
    if not kept:
        monkeypatch.setattr(qlinear, "_KEPT_WEIGHTS", 0)
    info = np.iinfo(dtype)
    c = ws[1] * attrs.get("group", 1)
    x = rng.integers(info.min, info.max, (2, c, 9, 10), endpoint=True).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w = rng.integers(-128, 127, ws, endpoint=True).astype(np.int8)
    x_zero, w_zero = np.array(info.max // 3, dtype), (np.arange(ws[0]) - 3).astype(np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, ws[0]).astype(np.int32)
    args = (x, x_zero, w, w_zero)
    geometry = ("NOTSET", attrs.get("dilations"), attrs.get("group", 1), None)
    geometry += (attrs["pads"], attrs.get("strides"))
    for b in (None, bias):
        found = qlinear.uncentered_conv(*args, b, *geometry)
        assert found is not None
        want, _ = qlinear.integer_conv(*args, *geometry)
        if b is not None:
            want = want + b.reshape(-1, 1, 1)
        np.testing.assert_array_equal(found[0], want)
        assert found[1] >= np.abs(want).max()
    # sums that uncentered 8-bit values could carry past 2^24 need integer_conv's chunks
    wide = np.full((4, 64, 5, 5), 127, np.int8)
    x_wide = rng.integers(info.min, info.max, (1, 64, 6, 6), endpoint=True).astype(dtype)
    none = qlinear.uncentered_conv(
        x_wide, x_zero, wide, None, None, "NOTSET", None, 1, None, [2, 2, 2, 2], None
    )
    assert none is None
