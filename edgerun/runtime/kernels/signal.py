"""Signal processing: DFT, STFT, the window functions, MelWeightMatrix."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.registry import kernel

# -- helpers --------------------------------------------------------------------------------


def _int(x, name):
    x = np.asarray(x)
    if x.size != 1:
        raise ValueError(f"{name} must be a scalar, got shape {x.shape}")
    return int(x.reshape(-1)[0])


def _complex(x):
    # [..., 1] real or [..., 2] (real, imaginary) -> (array without that axis, is_complex)
    if x.ndim < 2 or x.shape[-1] not in (1, 2):
        raise ValueError(f"expected a trailing axis of 1 (real) or 2 (complex), got {x.shape}")
    f = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    if x.shape[-1] == 1:
        return f[..., 0], False
    return f[..., 0] + 1j * f[..., 1], True


def _pairs(z, dtype):
    if np.iscomplexobj(z):
        return np.stack((z.real, z.imag), axis=-1).astype(dtype)
    return z[..., None].astype(dtype)


def _dft(x, dft_length, axis, inverse, onesided):
    rank = x.ndim
    if not -rank <= axis <= rank - 2 or axis == -1:
        raise ValueError(f"DFT axis {axis} is out of range for an input of rank {rank}")
    signal, is_complex = _complex(x)
    axis %= rank
    size = signal.shape[axis]
    if dft_length is None:
        n = 2 * (size - 1) if inverse and onesided else size
    else:
        n = _int(dft_length, "dft_length")
    if inverse:
        if onesided:
            return _pairs(np.fft.irfft(signal, n=n, axis=axis), x.dtype)
        return _pairs(np.fft.ifft(signal, n=n, axis=axis), x.dtype)
    if onesided and not is_complex:
        return _pairs(np.fft.rfft(signal, n=n, axis=axis), x.dtype)
    spectrum = np.fft.fft(signal, n=n, axis=axis)
    if onesided:
        spectrum = np.take(spectrum, np.arange(n // 2 + 1), axis=axis)
    return _pairs(spectrum, x.dtype)


# -- DFT, STFT ------------------------------------------------------------------------------


@kernel("DFT", since=17)
def dft_17(input, dft_length=None, *, axis=1, inverse=0, onesided=0):
    return _dft(input, dft_length, axis, inverse, onesided)


@kernel("DFT", since=20)
def dft_20(input, dft_length=None, axis=None, *, inverse=0, onesided=0):
    return _dft(input, dft_length, -2 if axis is None else _int(axis, "axis"), inverse, onesided)


@kernel("STFT", since=17)
def stft_17(signal, frame_step, window=None, frame_length=None, *, onesided=1):
    if signal.ndim != 3:
        raise ValueError(f"STFT signal must be [batch, length, 1|2], got shape {signal.shape}")
    step = _int(frame_step, "frame_step")
    if frame_length is not None:
        length = _int(frame_length, "frame_length")
    else:
        length = signal.shape[1] if window is None else window.shape[0]
    if window is not None and window.shape[0] != length:
        raise ValueError(f"window length {window.shape[0]} != frame_length {length}")
    if step <= 0 or not 0 < length <= signal.shape[1]:
        raise ValueError(f"bad frame_step {step} / frame_length {length} for {signal.shape}")
    z, is_complex = _complex(signal)  # (batch, length)
    frames = np.lib.stride_tricks.sliding_window_view(z, length, axis=1)[:, ::step]
    if window is not None:
        frames = frames * window.astype(frames.real.dtype, copy=False)
    if onesided and not is_complex:
        return _pairs(np.fft.rfft(frames, axis=-1), signal.dtype)
    spectrum = np.fft.fft(frames, axis=-1)
    if onesided:
        spectrum = spectrum[..., : length // 2 + 1]
    return _pairs(spectrum, signal.dtype)


# -- windows, MelWeightMatrix ---------------------------------------------------------------


def _window(size, periodic, output_datatype, coefficients):
    # sum_k (-1)^k a_k cos(2 pi k n / N), N = size (periodic) or size - 1 (symmetric)
    n_points = _int(size, "size")
    if n_points < 0:
        raise ValueError(f"window size must be >= 0, got {n_points}")
    denominator = n_points if periodic else n_points - 1
    phase = 2 * np.pi * np.arange(n_points) / max(denominator, 1)
    w = sum((-1) ** k * a * np.cos(k * phase) for k, a in enumerate(coefficients))
    return np.asarray(w, dtype=np.float64).astype(runtime_dtype(int(output_datatype)))


@kernel("HannWindow", since=17)
def hann_window_17(size, *, output_datatype=1, periodic=1):
    return _window(size, periodic, output_datatype, (0.5, 0.5))


@kernel("HammingWindow", since=17)
def hamming_window_17(size, *, output_datatype=1, periodic=1):
    return _window(size, periodic, output_datatype, (25 / 46, 21 / 46))


@kernel("BlackmanWindow", since=17)
def blackman_window_17(size, *, output_datatype=1, periodic=1):
    return _window(size, periodic, output_datatype, (0.42, 0.5, 0.08))


@kernel("MelWeightMatrix", since=17)
def mel_weight_matrix_17(
    num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *, output_datatype=1
):
    bins = _int(num_mel_bins, "num_mel_bins")
    n_fft = _int(dft_length, "dft_length")
    rate = _int(sample_rate, "sample_rate")
    low, high = (float(np.asarray(v).reshape(-1)[0]) for v in (lower_edge_hertz, upper_edge_hertz))
    # band edges: equally spaced in mel (2595 log10(1 + f / 700)), as spectrogram bin indices
    low_mel, high_mel = (2595 * np.log1p(f / 700) / np.log(10) for f in (low, high))
    mels = np.arange(bins + 2) * ((high_mel - low_mel) / (bins + 2)) + low_mel
    hertz = 700 * np.expm1(mels / 2595 * np.log(10))
    edges = ((n_fft + 1) * hertz // rate).astype(np.int64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    j = np.arange(n_fft // 2 + 1)[:, None]
    rising = np.where(center > left, (j - left) / np.maximum(center - left, 1), 1.0)
    falling = (right - j) / np.maximum(right - center, 1)
    weights = np.where((j >= left) & (j <= center), rising, 0.0)
    weights = np.where((j >= center) & (j < right), falling, weights)
    return weights.astype(runtime_dtype(int(output_datatype)))
