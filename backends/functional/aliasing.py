"""Aliasing and translation equivariance (after StyleGAN3, Karras et al. 2021): an ideal sub-pixel
translation, ideal and FIR low-pass resampling, a pointwise nonlinearity run at a higher rate
between low-pass filters (StyleGAN3's filtered nonlinearity), a small convolution stack with and
without those filters, and how far the stack is from commuting with a translation.

Signals are periodic: images are (N, C, H, W), read as the band-limited periodic interpolant of
their samples, and every convolution pads circularly, so a translation by whole pixels is a roll.
Pixel i of a grid sits at i; a factor-f finer grid puts pixel i of the coarse grid at f i.
Frequencies are in cycles per pixel of the grid they refer to.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

FILTERS = ("ideal", "sinc", "gaussian")
SINC_TAPS_PER_FACTOR = 6  # StyleGAN3's filter size: 6 taps per factor of the finer rate, plus one (zero phase)
KAISER_BETA = 8.0
LEAKY_SLOPE = 0.2


def _shift_phase(n: int, d: float, like: torch.Tensor) -> torch.Tensor:
    """(n,) exp(-2 pi i f d) per DFT frequency; cos(pi d) at the Nyquist bin of an even n."""
    f = torch.fft.fftfreq(n, device=like.device, dtype=torch.float64)
    phase = torch.exp(-2j * math.pi * f * d)
    if n % 2 == 0:
        phase[n // 2] = math.cos(math.pi * d)
    return phase.to(torch.complex128 if like.dtype == torch.float64 else torch.complex64)


def fourier_shift(x: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """The periodic band-limited translation of (N, C, H, W) by (dx, dy) pixels: out(p) = x(p - d),
    content moves right and down. Phases exp(-2 pi i f d), one axis after the other; the Nyquist row
    and column of an even size are scaled by cos(pi d) (the real part of their phase), so the
    result is real and whole pixels are exact rolls. A shift of zero returns ``x`` itself."""
    if x.dim() != 4:
        raise ValueError(f"fourier_shift expects (N, C, H, W), got {tuple(x.shape)}")
    if dx == 0 and dy == 0:
        return x
    h, w = x.shape[-2:]
    phase = _shift_phase(h, dy, x).view(-1, 1) * _shift_phase(w, dx, x).view(1, -1)
    return torch.fft.ifft2(torch.fft.fft2(x) * phase).real.to(x.dtype)


def _real(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def lowpass_taps(kind: str, cutoff: float, factor: int, dtype: torch.dtype = torch.float32,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """A zero-phase (odd-length, symmetric) 1-D FIR low-pass on a grid ``factor`` times finer than
    the pixels, cutoff at ``cutoff`` x the pixel Nyquist (0.5 / f cycles per fine pixel at 1),
    summing to 1. ``sinc``: a Kaiser-windowed sinc of 6 f + 1 taps (StyleGAN3's length, beta 8);
    ``gaussian``: the Gaussian whose response is 1/2 at the cutoff, to 3 sigma."""
    fc = cutoff * 0.5 / factor
    if kind == "sinc":
        n = SINC_TAPS_PER_FACTOR * factor + 1
        t = torch.arange(n, dtype=torch.float64) - n // 2
        window = torch.kaiser_window(n, periodic=False, beta=KAISER_BETA, dtype=torch.float64)
        taps = 2 * fc * torch.sinc(2 * fc * t) * window
    elif kind == "gaussian":
        sigma = math.sqrt(math.log(2) / 2) / (math.pi * fc)  # exp(-2 pi^2 sigma^2 f^2) = 1/2 at f = fc
        r = max(1, int(math.ceil(3 * sigma)))
        t = torch.arange(-r, r + 1, dtype=torch.float64)
        taps = torch.exp(-t * t / (2 * sigma * sigma))
    else:
        raise ValueError(f"unknown FIR filter {kind!r}; one of sinc, gaussian")
    return (taps / taps.sum()).to(device=device, dtype=dtype)


def lowpass_response(kind: str, cutoff: float, factor: int, n: int, device=None, dtype=torch.float64,
                     boundary: float = 0.5) -> torch.Tensor:
    """(n,) the gain of the 1-D low-pass at each DFT frequency of an n-pixel periodic fine grid.
    ``ideal``: 1 below the cutoff (``cutoff`` x 0.5 / f cycles per fine pixel), ``boundary``
    exactly at it (1/2 upsampling: the coarse Nyquist splits between +f and -f; 1 downsampling:
    decimation folds the two back together), 0 above; ``sinc`` / ``gaussian``: the zero-phase
    FIR's response sum_m taps[m] cos(2 pi f m), so multiplying a spectrum by it is the circular
    convolution with :func:`lowpass_taps`."""
    f = torch.fft.fftfreq(n, device=device, dtype=torch.float64)
    if kind == "ideal":
        fc = cutoff * 0.5 / factor
        gain = torch.where(f.abs() < fc - 1e-9, 1.0, torch.where(f.abs() <= fc + 1e-9, boundary, 0.0))
    elif kind in ("sinc", "gaussian"):
        taps = lowpass_taps(kind, cutoff, factor, torch.float64, device)
        m = torch.arange(taps.numel(), device=device, dtype=torch.float64) - taps.numel() // 2
        gain = (taps * torch.cos(2 * math.pi * f.view(-1, 1) * m)).sum(1)
    else:
        raise ValueError(f"unknown filter {kind!r}; one of {', '.join(FILTERS)}")
    return gain.to(dtype)


def _filter_2d(kind: str, cutoff: float, factor: int, h: int, w: int, like: torch.Tensor, up: bool) -> torch.Tensor:
    real, edge = _real(like), 0.5 if up else 1.0
    return (lowpass_response(kind, cutoff, factor, h, like.device, real, edge).view(-1, 1)
            * lowpass_response(kind, cutoff, factor, w, like.device, real, edge).view(1, -1))


def resample(x: torch.Tensor, factor: int, up: bool, filter: Optional[str], cutoff: float = 1.0) -> torch.Tensor:
    """Up- or downsample (N, C, H, W) by ``factor``; coarse pixel i sits at fine pixel f i.

    ``filter`` None: no low-pass (nearest-neighbour copies up, plain decimation down). Otherwise the
    low-pass of :func:`lowpass_response`, applied in the frequency domain: up, the spectrum of the
    zero-inserted signal (the coarse spectrum tiled f x f) times the response and f^2; down, the
    spectrum times the response, folded onto the coarse frequencies (decimation). The ideal filter
    at cutoff 1 gives the band-limited interpolant (:func:`fourier_shift` at the fine positions)."""
    if factor == 1:
        return x
    if filter is None:
        return x.repeat_interleave(factor, -2).repeat_interleave(factor, -1) if up else x[..., ::factor, ::factor]
    h, w = x.shape[-2:]
    coarse = (h, w) if up else (h // factor, w // factor)
    if filter == "ideal" and coarse[0] % 2 and coarse[1] % 2 and (up or (h % factor == 0 and w % factor == 0)):
        return _ideal_odd(x, factor, up, cutoff)
    if up:
        spectrum = torch.fft.fft2(x).repeat(1, 1, factor, factor)
        spectrum = spectrum * (_filter_2d(filter, cutoff, factor, h * factor, w * factor, x, True) * factor * factor)
        return torch.fft.ifft2(spectrum).real.to(x.dtype)
    if h % factor or w % factor:
        raise ValueError(f"downsampling by {factor} needs sides divisible by it, got {tuple(x.shape)}")
    spectrum = torch.fft.fft2(x) * _filter_2d(filter, cutoff, factor, h, w, x, False)
    hc, wc = h // factor, w // factor
    folded = None  # slices added one by one: a complex sum over reshaped axes ran 20x slower on the CPU
    for a in range(factor):
        for b in range(factor):
            part = spectrum[..., a * hc: (a + 1) * hc, b * wc: (b + 1) * wc]
            folded = part.clone() if folded is None else folded.add_(part)
    return torch.fft.ifft2(folded / (factor * factor)).real.to(x.dtype)


def _ideal_odd(x: torch.Tensor, factor: int, up: bool, cutoff: float) -> torch.Tensor:
    """:func:`resample` with the ideal filter when the coarse sides are odd: the coarse band then
    holds no Nyquist bin and ends strictly between fine bins, so up is zero-padding the coarse
    half spectrum and down is cropping it (real FFTs, no tiling, no folding; equal to the general
    path, tested)."""
    h, w = x.shape[-2:]
    hc, wc = (h, w) if up else (h // factor, w // factor)
    top, cols = (hc + 1) // 2, wc // 2 + 1  # rows 0..top-1 hold frequencies >= 0, the last hc // 2 the negative ones
    real = _real(x)
    edge = 0.5 if up else 1.0
    gain = (lowpass_response("ideal", cutoff, 1, hc, x.device, real, edge).view(-1, 1)
            * lowpass_response("ideal", cutoff, 1, wc, x.device, real, edge)[:cols].view(1, -1))
    if up:
        spectrum = torch.fft.rfft2(x) * (gain * factor * factor)
        out = spectrum.new_zeros(*x.shape[:-2], h * factor, (w * factor) // 2 + 1)
        out[..., :top, :cols] = spectrum[..., :top, :]
        out[..., out.shape[-2] - hc // 2:, :cols] = spectrum[..., top:, :]
        return torch.fft.irfft2(out, s=(h * factor, w * factor)).to(x.dtype)
    spectrum = torch.fft.rfft2(x)
    band = torch.cat([spectrum[..., :top, :cols], spectrum[..., h - hc // 2:, :cols]], -2)
    return torch.fft.irfft2(band * (gain / (factor * factor)), s=(hc, wc)).to(x.dtype)


def upsample_ideal(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, f H, f W), the band-limited interpolant sampled f times finer:
    out[f i + a, f j + b] = :func:`fourier_shift` (x, -b / f, -a / f)[i, j]."""
    return resample(x, factor, True, "ideal")


def downsample_ideal(x: torch.Tensor, factor: int, cutoff: float = 1.0) -> torch.Tensor:
    """(N, C, f H, f W) -> (N, C, H, W): ideal low-pass at ``cutoff`` x the coarse Nyquist, then
    every f-th pixel."""
    return resample(x, factor, False, "ideal", cutoff)


def filtered_leaky_relu(x: torch.Tensor, factor: int = 2, filter: Optional[str] = "ideal", cutoff: float = 1.0,
                        slope: float = LEAKY_SLOPE) -> torch.Tensor:
    """StyleGAN3's filtered nonlinearity: upsample by ``factor``, leaky ReLU, low-pass and decimate.
    With ``filter`` None the resampling has no low-pass, and the result is the leaky ReLU at the
    pixel rate exactly (decimation keeps the very pixels nearest-neighbour upsampling copied)."""
    return resample(F.leaky_relu(resample(x, factor, True, filter, cutoff), slope), factor, False, filter, cutoff)


def circular_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.conv2d`` with circular 'same' padding: commutes with every periodic translation."""
    k = weight.shape[-1]
    if weight.dim() != 4 or x.dim() != 4 or x.shape[1] != weight.shape[1] or k % 2 == 0:
        raise ValueError(f"input must be (N, {weight.shape[1] if weight.dim() == 4 else '?'}, H, W) and weight "
                         f"(C_out, C_in, k, k) with k odd, got {tuple(x.shape)} and {tuple(weight.shape)}")
    r = k // 2
    return F.conv2d(F.pad(x, (r, r, r, r), mode="circular"), weight, bias)


def conv_stack(x: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], factor: int = 2,
               filter: Optional[str] = "ideal", cutoff: float = 1.0) -> torch.Tensor:
    """Circular convolutions, each but the last followed by :func:`filtered_leaky_relu`."""
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"expected as many biases as weights (at least one), got {len(weights)} and {len(biases)}")
    for i, (w, b) in enumerate(zip(weights, biases)):
        x = circular_conv(x, w, b)
        if i < len(weights) - 1:
            x = filtered_leaky_relu(x, factor, filter, cutoff)
    return x


def random_stack(layers: int, channels: int, seed: int = 0, in_channels: int = 1, dtype: torch.dtype = torch.float32,
                 device: Optional[torch.device] = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Seeded 3 x 3 weights for ``layers`` nonlinear layers and a last linear one to one channel:
    N(0, 2 / fan in) (He), biases N(0, 0.2^2); drawn in float64 on the CPU."""
    g = torch.Generator().manual_seed(int(seed))
    sizes = [in_channels] + [channels] * layers + [1]
    weights, biases = [], []
    for c_in, c_out in zip(sizes[:-1], sizes[1:]):
        w = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float64) * math.sqrt(2.0 / (9 * c_in))
        b = torch.randn(c_out, generator=g, dtype=torch.float64) * 0.2
        weights.append(w.to(device, dtype))
        biases.append(b.to(device, dtype))
    return weights, biases


def equivariance_residual(stack, x: torch.Tensor, dx: float, dy: float,
                          reference: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the output of the shifted input shifted back, its residual against the unshifted output):
    T_-d(stack(T_d x)) and that minus stack(x) (``reference``, when the caller has it). Zero for a
    stack that commutes with the translation T_d."""
    if reference is None:
        reference = stack(x)
    back = fourier_shift(stack(fourier_shift(x, dx, dy)), -dx, -dy)
    return back, back - reference


def psnr(residual: torch.Tensor, reference: torch.Tensor) -> float:
    """10 log10(peak^2 / mean(residual^2)) in dB, peak the reference's max - min (StyleGAN3's EQ-T
    uses the same form); inf for a zero residual."""
    mse = float(residual.double().square().mean())
    peak = float(reference.max() - reference.min())
    return math.inf if mse == 0 else 10.0 * math.log10(max(peak, 1e-12) ** 2 / mse)


def taper_to_mean(x: torch.Tensor, fraction: float = 0.08) -> torch.Tensor:
    """(N, C, H, W) blended to its mean over a raised-cosine border ``fraction`` of each side wide,
    so its periodic extension has no seam (a translation then wraps smooth content)."""
    h, w = x.shape[-2:]

    def ramp(n: int) -> torch.Tensor:
        m = max(1, int(round(fraction * n)))
        t = torch.ones(n, dtype=x.dtype, device=x.device)
        edge = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(m, dtype=x.dtype, device=x.device) + 0.5) / m)
        t[:m], t[n - m:] = edge, edge.flip(0)
        return t

    window = ramp(h).view(-1, 1) * ramp(w).view(1, -1)
    mean = x.mean((-2, -1), keepdim=True)
    return mean + (x - mean) * window


class FilteredConvStack(nn.Module):
    """Module twin of :func:`conv_stack`: 3 x 3 circular convolutions with filtered leaky ReLUs."""

    def __init__(self, channels: int, layers: int, in_channels: int = 1, factor: int = 2,
                 filter: Optional[str] = "ideal", cutoff: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        if filter is not None and filter not in FILTERS:
            raise ValueError(f"unknown filter {filter!r}; one of {', '.join(FILTERS)} or None")
        self.factor, self.filter, self.cutoff = factor, filter, cutoff
        weights, biases = random_stack(layers, channels, seed, in_channels)
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_stack(x, list(self.weights), list(self.biases), self.factor, self.filter, self.cutoff)
