"""Control flow: If, Loop, Scan. Subgraphs arrive as plans; ``scope`` holds the outer values
they read."""

from __future__ import annotations

import numpy as np

from edgerun.runtime import budget
from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.registry import kernel


def _truth(cond) -> bool:
    cond = np.asarray(cond)
    if cond.size != 1:
        raise ValueError(f"a condition must hold one element, got shape {cond.shape}")
    return bool(cond.reshape(-1)[0])


def _empty_scan_output(body, index: int) -> np.ndarray:
    """A scan output of zero iterations: shaped from the body's declared output if it can be."""
    vtype = body.graph.outputs[index].type
    dims = vtype.shape if vtype is not None and vtype.kind == "tensor" else None
    dtype = runtime_dtype(vtype.elem_type) if vtype is not None and vtype.elem_type else np.float32
    if dims is None or not all(isinstance(d, int) for d in dims):
        return np.empty((0,), dtype=dtype)
    return np.empty((0, *dims), dtype=dtype)


def _stack(body, index: int, values: list, axis: int = 0) -> np.ndarray:
    if not values:
        return _empty_scan_output(body, index)
    return np.stack(values, axis=axis)


@kernel("If", since=1, scope=True)
def if_1(cond, *, then_branch=None, else_branch=None, scope=None):
    branch = then_branch if _truth(cond) else else_branch
    return tuple(branch.call([], scope))


@kernel("Loop", since=1, scope=True)
def loop_1(M=None, cond=None, *v_initial, body=None, scope=None):
    trip_count = None if M is None else int(np.asarray(M).reshape(-1)[0])
    keep_going = True if cond is None else _truth(cond)
    carried = list(v_initial)
    n = len(carried)
    scans: list[list] = [[] for _ in range(len(body.output_names) - 1 - n)]
    i = scanned = 0
    while keep_going and (trip_count is None or i < trip_count):
        out = body.call([np.array(i, dtype=np.int64), np.array(keep_going), *carried], scope)
        keep_going = _truth(out[0])
        carried = out[1 : 1 + n]
        for values, value in zip(scans, out[1 + n :], strict=True):
            values.append(value)
            scanned += np.asarray(value).nbytes
        i += 1
        # an absurd trip count grows the scan outputs until the budget stops it (the trip
        # count alone proves nothing: exported while-loops pass INT64_MAX and stop on cond)
        budget.check_bytes(2 * scanned, f"its scan outputs after {i} iterations (then stacked)")
    return (*carried, *(_stack(body, 1 + n + k, v) for k, v in enumerate(scans)))


def _scan(body, scope, states: list, steps: list[list]) -> tuple[list, list[list]]:
    """Run ``body`` over time steps; ``steps[t]`` holds every scan input's slice at t."""
    scans: list[list] = [[] for _ in range(len(body.output_names) - len(states))]
    for slices in steps:
        out = body.call([*states, *slices], scope)
        states = out[: len(states)]
        for values, value in zip(scans, out[len(states) :], strict=True):
            values.append(value)
    return states, scans


@kernel("Scan", since=8, scope=True)
def scan_8(sequence_lens, *inputs, body=None, num_scan_inputs=None, directions=None, scope=None):
    # batch axis 0, time axis 1; each batch element runs its own (sequence_lens) length
    n = len(inputs) - num_scan_inputs
    states, xs = inputs[:n], inputs[n:]
    directions = directions or [0] * num_scan_inputs
    batch = xs[0].shape[0]
    steps_total = xs[0].shape[1]
    lens = [steps_total] * batch if sequence_lens is None else [int(v) for v in sequence_lens]
    final, outputs = [], []
    for b in range(batch):
        seqs = [
            x[b, : lens[b]][::-1] if d else x[b, : lens[b]]
            for x, d in zip(xs, directions, strict=True)
        ]
        steps = [[s[t] for s in seqs] for t in range(lens[b])]
        done, scans = _scan(body, scope, [s[b] for s in states], steps)
        final.append(done)
        outputs.append([_padded(body, n + k, v, steps_total) for k, v in enumerate(scans)])
    stacked_states = [np.stack([f[i] for f in final]) for i in range(n)]
    stacked_scans = [np.stack([o[k] for o in outputs]) for k in range(len(outputs[0]))]
    return (*stacked_states, *stacked_scans)


def _padded(body, index: int, values: list, length: int) -> np.ndarray:
    stacked = _stack(body, index, values)
    if stacked.shape[0] == length:
        return stacked
    pad = np.zeros((length - stacked.shape[0], *stacked.shape[1:]), dtype=stacked.dtype)
    return np.concatenate([stacked, pad])


@kernel("Scan", since=9, scope=True)
def scan_9(
    *initial_state_and_scan_inputs,
    body=None,
    num_scan_inputs=None,
    scan_input_axes=None,
    scan_input_directions=None,
    scan_output_axes=None,
    scan_output_directions=None,
    scope=None,
):
    inputs = initial_state_and_scan_inputs
    n = len(inputs) - num_scan_inputs
    xs = inputs[n:]
    in_axes = scan_input_axes or [0] * len(xs)
    in_dirs = scan_input_directions or [0] * len(xs)
    seqs = []
    for x, axis, reverse in zip(xs, in_axes, in_dirs, strict=True):
        s = np.moveaxis(x, axis % x.ndim, 0)
        seqs.append(s[::-1] if reverse else s)
    steps = [[s[t] for s in seqs] for t in range(seqs[0].shape[0])]
    states, scans = _scan(body, scope, list(inputs[:n]), steps)
    out_axes = scan_output_axes or [0] * len(scans)
    out_dirs = scan_output_directions or [0] * len(scans)
    stacked = []
    for k, values in enumerate(scans):
        values = values[::-1] if out_dirs[k] else values
        y = _stack(body, n + k, values)
        stacked.append(np.moveaxis(y, 0, out_axes[k] % y.ndim))
    return (*states, *stacked)
