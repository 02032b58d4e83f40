"""Depthwise 3x3 convolution, edgerun's kernel against onnxruntime's Conv (group=C), per layer.

    python -m bench.micro_depthwise [--reps 30] [--clock thread|wall]

MobileNetV2's depthwise layers at 224x224, batch 1, one thread. The input is stored
channels-last (as edgerun's 1x1 convolutions hand it over); onnxruntime gets the same
values in NCHW. Each layer is timed as Conv alone and as Conv followed by Clip(0, 6) (for
edgerun the FusedConv the fuse_activation pass makes of that pair). Contestants run
interleaved in one process, so load from other processes falls on both; ``--clock thread``
(the default) counts this thread's CPU time only. Ratios are edgerun / onnxruntime.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

# (channels, input height = width, stride)
LAYERS = [
    (32, 112, 1),
    (96, 112, 2),
    (144, 56, 1),
    (144, 56, 2),
    (192, 28, 1),
    (192, 28, 2),
    (384, 14, 1),
    (576, 14, 1),
    (576, 14, 2),
    (960, 7, 1),
]


def _ort_session(c: int, h: int, stride: int, w: np.ndarray, b: np.ndarray, clip: bool):
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    conv_out = "c" if clip else "y"
    attrs = {"group": c, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [stride] * 2}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [conv_out], **attrs)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if clip:
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
        inits += [
            numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0), ("hi", 6))
        ]
    graph = helper.make_graph(
        nodes,
        "depthwise",
        [helper.make_tensor_value_info("x", 1, [1, c, h, h])],
        [helper.make_tensor_value_info("y", 1, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def interleaved(
    fns: list[Callable[[], object]], reps: int, clock: Callable[[], float]
) -> list[float]:
    """Median seconds of each function, run in turn ``reps`` times after two warm-ups."""
    for fn in fns * 2:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, spent in zip(fns, times, strict=True):
            start = clock()
            fn()
            spent.append(clock() - start)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from edgerun.runtime.registry import resolve

    threadpool_limits(1)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    conv = resolve("", "Conv", 17).fn
    fused = resolve("com.microsoft", "FusedConv", 1).fn
    rng = np.random.default_rng(0)
    totals = np.zeros(4)
    print(f"{'layer':>16} {'ort conv ms':>11} {'conv x':>7} {'+clip ms':>9} {'+clip x':>7}")
    for c, h, stride in LAYERS:
        x_cl = rng.standard_normal((1, h, h, c)).astype(np.float32)
        x = x_cl.transpose(0, 3, 1, 2)  # NCHW view of channels-last memory
        x_nchw = np.ascontiguousarray(x)
        w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
        b = rng.standard_normal(c).astype(np.float32)
        attrs = {"group": c, "pads": [1, 1, 1, 1], "strides": [stride] * 2}
        plain, clipped = (_ort_session(c, h, stride, w, b, clip) for clip in (False, True))
        fns = [
            lambda s=plain, x=x_nchw: s.run(None, {"x": x}),
            lambda x=x, w=w, b=b, a=attrs: conv(x, w, b, **a),
            lambda s=clipped, x=x_nchw: s.run(None, {"x": x}),
            lambda x=x, w=w, b=b, a=attrs: fused(
                x, w, b, activation="Clip", activation_params=[0.0, 6.0], **a
            ),
        ]
        want, got = fns[2](), fns[3]()
        np.testing.assert_allclose(got, want[0], rtol=1e-4, atol=1e-4)
        t = np.array(interleaved(fns, args.reps, clock))
        totals += t
        print(_row(f"{c}x{h}x{h} s{stride}", t))
    print(_row("all layers", totals))


def _row(name: str, t: np.ndarray) -> str:
    return f"{name:>16} {t[0] * 1e3:11.3f} {t[1] / t[0]:7.2f} {t[2] * 1e3:9.3f} {t[3] / t[2]:7.2f}"


if __name__ == "__main__":
    main()
