"""Recurrent layers: LSTM, GRU, RNN.

The input projection of every time step is one matmul up front; the recurrence is a Python
loop over time steps, each a [batch, hidden] x [hidden, gates*hidden] matmul.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.registry import kernel


def _sigmoid(x, alpha, beta):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _softplus(x, alpha, beta):
    return np.logaddexp(x, 0)


# name (lower case) -> (function(x, alpha, beta), default alpha, default beta); None where
# the function takes no such parameter. Parameters are taken in order from
# activation_alpha / activation_beta by the activations that use them, as onnxruntime does.
_ACTIVATIONS = {
    "sigmoid": (_sigmoid, None, None),
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "relu": (lambda x, a, b: np.maximum(x, 0), None, None),
    "affine": (lambda x, a, b: x * a + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, x * a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda x, a, b: np.tanh(x * b) * a, 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(x * a + b, 0, 1), 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, (np.exp(np.minimum(x, 0)) - 1) * a), 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None),
    "softplus": (_softplus, None, None),
}


def _activations(names, alphas, betas, defaults, num_directions, dt):
    """Per direction, the list of activation callables (f, g, h...)."""
    names = list(names) if names else list(defaults)
    if len(names) == len(defaults) and num_directions == 2:
        names = names * 2
    if len(names) != len(defaults) * num_directions:
        raise ValueError(f"expected {len(defaults) * num_directions} activations, got {names}")
    alphas, betas = list(alphas or []), list(betas or [])
    funcs = []
    for name in names:
        try:
            fn, alpha, beta = _ACTIVATIONS[name.lower()]
        except KeyError:
            raise ValueError(f"unsupported RNN activation {name!r}") from None
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        a = dt.type(alpha if alpha is not None else 0)
        b = dt.type(beta if beta is not None else 0)
        funcs.append(lambda x, fn=fn, a=a, b=b: fn(x, a, b))
    n = len(defaults)
    return [funcs[d * n : (d + 1) * n] for d in range(num_directions)]


def _clipper(clip, dt):
    if clip is None:
        return lambda x: x
    bound = dt.type(clip)
    return lambda x: np.clip(x, -bound, bound)


def _num_directions(direction):
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"unknown RNN direction {direction!r}")
    return 2 if direction == "bidirectional" else 1


def _time_order(steps, batch, lens, reverse):
    """[T, N] time indices to gather each step's input from (None: natural order).

    Reverse runs each sequence backwards within its own length; the map is its own inverse,
    so the same gather puts the outputs back in time order."""
    if not reverse:
        return None
    t = np.arange(steps)[:, None]
    lengths = np.full(batch, steps) if lens is None else lens
    return np.where(t < lengths, lengths - 1 - t, t)


def _recur(step_of, x, W, B, lens, initial, direction, hidden_size):
    """Run one cell per direction over x [T, N, I]; Y [T, D, N, H] and final states [D, N, H]."""
    steps, batch, _ = x.shape
    ys, finals = [], []
    columns = np.arange(batch)
    for d in range(_num_directions(direction)):
        proj = np.matmul(x, W[d].T)  # every time step's input projection at once
        if B is not None:
            proj += B[d]
        order = _time_order(steps, batch, lens, reverse=direction == "reverse" or d == 1)
        if order is not None:
            proj = proj[order, columns]
        step = step_of(d)
        state = tuple(s[d] for s in initial)
        y = np.empty((steps, batch, hidden_size), dtype=x.dtype)
        for t in range(steps):
            new = step(proj[t], *state)
            if lens is not None:  # finished sequences keep their state and output zeros
                live = (t < lens)[:, None]
                new = tuple(np.where(live, n, s) for n, s in zip(new, state, strict=True))
                y[t] = np.where(live, new[0], 0)
            else:
                y[t] = new[0]
            state = new
        ys.append(y if order is None else y[order, columns])
        finals.append(state)
    Y = np.stack(ys, axis=1)
    return Y, [np.stack(s) for s in zip(*finals, strict=True)]


def _dtype(X):
    return X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _run(step_of, X, W, B, sequence_lens, states, direction, hidden_size, layout):
    """Layouts, default states, sequence lengths; B is the folded bias, [D, gates * H]."""
    dt = _dtype(X)
    x = X.astype(dt, copy=False)
    if layout:
        x = np.swapaxes(x, 0, 1)
        states = [None if s is None else np.swapaxes(s, 0, 1) for s in states]
    steps, batch, _ = x.shape
    D = _num_directions(direction)
    initial = [
        np.zeros((D, batch, hidden_size), dt) if s is None else s.astype(dt, copy=False)
        for s in states
    ]
    lens = None
    if sequence_lens is not None:
        lens = np.asarray(sequence_lens).astype(np.int64).reshape(-1)
        if np.all(lens == steps):
            lens = None
    W = W.astype(dt, copy=False)
    Y, finals = _recur(step_of, x, W, B, lens, initial, direction, hidden_size)
    if layout:
        Y = Y.transpose(2, 0, 1, 3)
        finals = [np.swapaxes(s, 0, 1) for s in finals]
    return tuple(r.astype(X.dtype, copy=False) for r in (Y, *finals))


# -- LSTM -----------------------------------------------------------------------------------


def _lstm_step(R, P, acts, clip, input_forget):
    f, g, h = acts
    Rt = R.T
    pi, po, pf = (None, None, None) if P is None else np.split(P, 3)

    def step(p, h_prev, c_prev):
        i, o, fo, c = np.split(p + h_prev @ Rt, 4, axis=-1)
        if pi is not None:
            i = i + pi * c_prev
            fo = fo + pf * c_prev
        i = f(clip(i))
        fo = 1 - i if input_forget else f(clip(fo))
        c_new = fo * c_prev + i * g(clip(c))
        if po is not None:
            o = o + po * c_new
        return f(clip(o)) * h(c_new), c_new

    return step


@kernel("LSTM", since=14)
def lstm_14(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    initial_c=None,
    P=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    input_forget=0,
    layout=0,
):
    dt = _dtype(X)
    H = hidden_size or R.shape[-1]
    acts = _activations(
        activations,
        activation_alpha,
        activation_beta,
        ("Sigmoid", "Tanh", "Tanh"),
        _num_directions(direction),
        dt,
    )
    R = R.astype(dt, copy=False)
    P = None if P is None else P.astype(dt, copy=False)
    # the recurrence bias Rb joins the input bias Wb once, in the up-front projection
    B = None if B is None else B[:, : 4 * H].astype(dt) + B[:, 4 * H :].astype(dt)

    def step_of(d):
        return _lstm_step(
            R[d], None if P is None else P[d], acts[d], _clipper(clip, dt), input_forget
        )

    return _run(step_of, X, W, B, sequence_lens, [initial_h, initial_c], direction, H, layout)


@kernel("LSTM", since=7)
def lstm_7(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    initial_c=None,
    P=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    input_forget=0,
):
    return lstm_14(
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        initial_c,
        P,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        input_forget=input_forget,
    )


@kernel("LSTM", since=1)
def lstm_1(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    initial_c=None,
    P=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    input_forget=0,
    output_sequence=0,
):
    # output_sequence only said whether Y is wanted; every output is produced anyway
    return lstm_7(
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        initial_c,
        P,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        input_forget=input_forget,
    )


# -- GRU ------------------------------------------------------------------------------------


def _gru_step(R, Rbh, acts, clip, linear_before_reset):
    f, g = acts
    H = R.shape[-1]
    Rzr, Rh = R[: 2 * H].T, R[2 * H :].T

    def step(p, h_prev):
        if linear_before_reset:
            zr, hh = np.split(h_prev @ R.T, [2 * H], axis=-1)
        else:
            zr = h_prev @ Rzr
        z, r = np.split(f(clip(p[:, : 2 * H] + zr)), 2, axis=-1)
        if linear_before_reset:
            hh = r * (hh + Rbh) if Rbh is not None else r * hh
        else:
            hh = (r * h_prev) @ Rh
        hh = g(clip(p[:, 2 * H :] + hh))
        return ((1 - z) * hh + z * h_prev,)

    return step


@kernel("GRU", since=14)
def gru_14(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    layout=0,
    linear_before_reset=0,
):
    dt = _dtype(X)
    H = hidden_size or R.shape[-1]
    acts = _activations(
        activations,
        activation_alpha,
        activation_beta,
        ("Sigmoid", "Tanh"),
        _num_directions(direction),
        dt,
    )
    R = R.astype(dt, copy=False)
    Rbh = None
    if B is not None:
        # Rb joins Wb up front, except Rbh under linear_before_reset (it sits inside r * (.))
        B = B.astype(dt, copy=False)
        Wb, Rb = B[:, : 3 * H], B[:, 3 * H :]
        if linear_before_reset:
            Rbh = Rb[:, 2 * H :]
            Rb = np.concatenate([Rb[:, : 2 * H], np.zeros_like(Rbh)], axis=1)
        B = Wb + Rb

    def step_of(d):
        rbh = None if Rbh is None else Rbh[d]
        return _gru_step(R[d], rbh, acts[d], _clipper(clip, dt), linear_before_reset)

    return _run(step_of, X, W, B, sequence_lens, [initial_h], direction, H, layout)


@kernel("GRU", since=7)
def gru_7(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    linear_before_reset=0,
):
    return gru_14(
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        linear_before_reset=linear_before_reset,
    )


@kernel("GRU", since=3)
def gru_3(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    linear_before_reset=0,
    output_sequence=0,
):
    return gru_7(
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
        linear_before_reset=linear_before_reset,
    )


@kernel("GRU", since=1)
def gru_1(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    output_sequence=0,
):
    return gru_7(
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
    )


# -- RNN ------------------------------------------------------------------------------------


def _rnn_step(R, acts, clip):
    (f,) = acts
    Rt = R.T

    def step(p, h_prev):
        return (f(clip(p + h_prev @ Rt)),)

    return step


@kernel("RNN", since=14)
def rnn_14(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    layout=0,
):
    dt = _dtype(X)
    H = hidden_size or R.shape[-1]
    acts = _activations(
        activations, activation_alpha, activation_beta, ("Tanh",), _num_directions(direction), dt
    )
    R = R.astype(dt, copy=False)
    B = None if B is None else B[:, :H].astype(dt) + B[:, H:].astype(dt)

    def step_of(d):
        return _rnn_step(R[d], acts[d], _clipper(clip, dt))

    return _run(step_of, X, W, B, sequence_lens, [initial_h], direction, H, layout)


@kernel("RNN", since=7)
def rnn_7(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
):
    return rnn_14(
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
    )


@kernel("RNN", since=1)
def rnn_1(
    X,
    W,
    R,
    B=None,
    sequence_lens=None,
    initial_h=None,
    *,
    activation_alpha=None,
    activation_beta=None,
    activations=None,
    clip=None,
    direction="forward",
    hidden_size=None,
    output_sequence=0,
):
    return rnn_7(
        X,
        W,
        R,
        B,
        sequence_lens,
        initial_h,
        activation_alpha=activation_alpha,
        activation_beta=activation_beta,
        activations=activations,
        clip=clip,
        direction=direction,
        hidden_size=hidden_size,
    )
