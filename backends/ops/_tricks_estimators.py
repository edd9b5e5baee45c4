"""The tricks operator's estimator panels: the reparameterization trick against the score
function for d/dmu E[f(z)], z ~ N(mu, sigma^2): the per-draw estimates as histograms against the
closed form, their means, how the variance of an N-draw mean falls with N, and f with the draws'
density."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np
import torch

from backends.functional.tricks import (
    batch_mean_variance,
    expected_value_gradient,
    objective,
    reparameterized_gradients,
    score_function_gradients,
)
from backends.layers import BarsLayer, CurveLayer

BINS = 48
TAIL = 0.01  # the histograms span the central 98% of the score-function estimates (and every reparameterized one)
CURVE_POINTS = 241
SERIES = ("reparameterization", "score function")
VARIANCE_PANEL = "Variance against draws"
MU_LIMIT = 2.0  # mu's range, -2..2: the plots' axes cover it, so dragging mu leaves them alone


def estimator_study(params: Mapping[str, Any]) -> dict[str, Any]:
    """Both estimators on one seeded set of draws, in float64, and the closed form."""
    mu, sigma, n = float(params["mu"]), float(params["sigma"]), int(params["samples"])
    gen = torch.Generator().manual_seed(int(params["seed"]))
    eps = torch.randn(n, generator=gen, dtype=torch.float64)
    f = objective(params["function"])
    estimates = {SERIES[0]: reparameterized_gradients(f, mu, sigma, eps),
                 SERIES[1]: score_function_gradients(f, mu, sigma, eps, bool(params["baseline"]))}
    return {"estimates": estimates, "truth": expected_value_gradient(params["function"], mu, sigma)}


def variance_study(study: dict[str, Any]) -> dict[str, Any]:
    """The variance of the mean of N draws, N = 1, 2, 4, ... up to an eighth of the draws."""
    n = study["estimates"][SERIES[0]].numel()
    sizes = [2**k for k in range(int(math.log2(n // 8)) + 1)]
    return {"sizes": sizes, "variance": {k: batch_mean_variance(v, sizes) for k, v in study["estimates"].items()}}


def summary(estimates: torch.Tensor, truth: float) -> dict[str, float]:
    """Mean, standard error of the mean, and how many standard errors the mean is from the truth."""
    n = estimates.numel()
    mean, sd = float(estimates.mean()), float(estimates.std(unbiased=True))
    se = sd / math.sqrt(n)
    return {"mean": mean, "se": se, "z": (mean - truth) / se if se > 0 else (0.0 if mean == truth else math.inf),
            "variance": sd * sd}


def nice_bounds(lo: float, hi: float) -> tuple[float, float]:
    """``lo`` and ``hi`` rounded outward to multiples of half a power of ten of their span: a
    plot's range that a small slider step leaves alone (a moving axis costs ~10 ms to lay out)."""
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    unit = 10.0 ** math.floor(math.log10(hi - lo)) / 2
    return math.floor(lo / unit) * unit, math.ceil(hi / unit) * unit


def histograms(estimates: dict[str, torch.Tensor], truth: float) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """Each estimator's share of draws per bin (%) on common bins, and the tallest bar."""
    score = estimates[SERIES[1]]
    reparam = estimates[SERIES[0]]
    lo = min(float(torch.quantile(score, TAIL)), float(reparam.min()), truth)
    hi = max(float(torch.quantile(score, 1 - TAIL)), float(reparam.max()), truth)
    lo, hi = nice_bounds(lo, hi)
    edges = torch.linspace(lo, hi, BINS + 1, dtype=torch.float64)
    centres = ((edges[1:] + edges[:-1]) / 2).numpy()
    out, top = {}, 0.0
    for name, values in estimates.items():
        share = torch.histc(values, BINS, lo, hi).numpy() * (100.0 / values.numel())  # outside: not counted
        out[name] = (centres, share)
        top = max(top, float(share.max()))
    return out, top


def estimator_layers(study: dict[str, Any], spread: Optional[dict[str, Any]],
                     params: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """The estimators' panels; without ``spread`` (:func:`variance_study`), all but the variance
    against draws."""
    truth, estimates = study["truth"], study["estimates"]
    stats = {k: summary(v, truth) for k, v in estimates.items()}
    fname = params["function"]
    score_name = "score function" + (" with baseline" if params["baseline"] else "")
    hist, top = histograms(estimates, truth)
    series = {SERIES[0]: hist[SERIES[0]], score_name: hist[SERIES[1]],
              "closed form": (np.array([truth, truth]), np.array([0.0, top]))}
    flat = float(estimates[SERIES[0]].abs().max()) == 0.0
    n = estimates[SERIES[0]].numel()
    ratio = stats[SERIES[1]]["variance"] / stats[SERIES[0]]["variance"] if stats[SERIES[0]]["variance"] > 0 else math.inf
    if flat:
        verdict = "every reparameterized estimate is 0: autograd sees the step as flat, so that estimator is biased"
    else:
        verdict = (f"the score function's per-draw variance is {ratio:.3g} times the reparameterized one's"
                   if ratio >= 1 else f"here the score function's per-draw variance is lower ({ratio:.2f} times)")
    means = [stats[SERIES[0]]["mean"], stats[SERIES[1]]["mean"], truth]
    reach = [expected_value_gradient(fname, float(m), float(params["sigma"]))  # the closed form over mu's range
             for m in np.linspace(-MU_LIMIT, MU_LIMIT, 41)]
    zs = " and ".join(f"{abs(stats[k]['z']):.1f}" for k in SERIES if math.isfinite(stats[k]["z"]))
    layers = (
        CurveLayer("Gradient estimates", series, x_label="one draw's estimate of d/dmu E[f(z)]",
                   y_label="share of draws (%)",
                   caption=f"{n} draws of z ~ N({params['mu']:g}, {params['sigma']:g}^2), f = {fname}, the score "
                           f"function's outer {2 * TAIL:.0%} left out; the vertical line is the closed form "
                           f"{truth:.4g}; {verdict}"),
        BarsLayer("Mean of the estimates", ("reparameterization", "score function", "closed form"),
                  {"d/dmu E[f(z)]": means}, value_label="d/dmu E[f(z)]",
                  y_range=nice_bounds(min(0.0, *means, *reach), max(0.0, *means, *reach)),
                  caption=f"means of {n} draws: {stats[SERIES[0]]['mean']:.4g} ± {stats[SERIES[0]]['se']:.2g} and "
                          f"{stats[SERIES[1]]['mean']:.4g} ± {stats[SERIES[1]]['se']:.2g} (± one standard error) "
                          f"against {truth:.4g}" + (f": {zs} standard errors off" if zs else "")),
        function_layer(params),
    )
    if spread is not None:
        variance = {name: (np.asarray(spread["sizes"], np.float64), v.numpy())
                    for name, v in zip((SERIES[0], score_name), spread["variance"].values()) if float(v.min()) > 0}
        layers = layers[:2] + (CurveLayer(
            VARIANCE_PANEL, variance, x_label="draws averaged (N)", y_label="variance of the mean", log_x=True,
            log_y=True, caption="the variance of an N-draw mean, measured over disjoint batches: both fall as 1/N, "
                                "the gap between the lines is the per-draw variance ratio"
                                + ("; the reparameterized estimates are all 0 (no line)" if flat else "")),) + layers[2:]
    rows = {
        "closed form d/dmu E[f]": round(truth, 5),
        "reparameterized mean": round(stats[SERIES[0]]["mean"], 5),
        "reparameterized standard error": round(stats[SERIES[0]]["se"], 5),
        "score-function mean": round(stats[SERIES[1]]["mean"], 5),
        "score-function standard error": round(stats[SERIES[1]]["se"], 5),
        "reparameterized per-draw variance": round(stats[SERIES[0]]["variance"], 5),
        "score-function per-draw variance": round(stats[SERIES[1]]["variance"], 5),
        "draws": n,
    }
    return layers, rows


def function_layer(params: Mapping[str, Any]) -> CurveLayer:
    """f over the draws' range, with the draws' density on a right axis."""
    mu, sigma = float(params["mu"]), float(params["sigma"])
    lo, hi = -MU_LIMIT - 4 * sigma, MU_LIMIT + 4 * sigma  # wherever mu goes: dragging it leaves the axis alone
    z = torch.linspace(lo, hi, CURVE_POINTS, dtype=torch.float64)
    density = torch.exp(-0.5 * ((z - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    fz = objective(params["function"])(z)
    return CurveLayer("The function and the draws", {"f(z)": (z.numpy(), fz.numpy()),
                                                      "density of z": (z.numpy(), density.numpy())},
                      x_label="z", y_label="f(z)", right=("density of z",), right_label="density of z",
                      caption=f"f = {params['function']} and where the draws of z fall (N({mu:g}, {sigma:g}^2))")
