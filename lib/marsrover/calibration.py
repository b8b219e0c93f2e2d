"""Calibration: are P(Surface) values honest, and temperature scaling to make them more so.

Everything here works on ``p_surface`` = P(Surface), the second softmax output. Bins are
equal-width on [0, 1] and follow scikit-learn's ``calibration_curve(strategy="uniform")``: a
value on an inner edge belongs to the lower bin, so the table agrees with scikit-learn on every
non-empty bin.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 fitted on the
validation split. Our models output probabilities, not logits, but softmax is unchanged by adding
a constant to every logit, so log-probabilities are valid logits: the rescaled P(Surface) is
``softmax(log p / T)``, i.e. ``expit(logit(p_surface) / T)`` for two classes. T > 1 softens
over-confident predictions, T < 1 sharpens under-confident ones; T does not change which class is
predicted, so accuracy is unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special

EPS = 1e-7  # float32 softmax outputs are exactly 0 or 1 when saturated: keep logs finite


def _p_surface(probabilities: np.ndarray) -> np.ndarray:
    """P(Surface) from either a vector of it or (N, 2) softmax outputs."""
    probabilities = np.asarray(probabilities, dtype="float64")
    if probabilities.ndim == 2:
        if probabilities.shape[1] != 2:
            raise ValueError(f"expected (N, 2) probabilities, got shape {probabilities.shape}")
        return probabilities[:, 1]
    if probabilities.ndim != 1:
        raise ValueError(f"expected P(Surface) of shape (N,) or (N, 2), got shape {probabilities.shape}")
    return probabilities


def _bin_ids(p_surface: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # The same assignment as sklearn.calibration.calibration_curve(strategy="uniform").
    return edges, np.searchsorted(edges[1:-1], p_surface)


def reliability_table(y_true: np.ndarray, p_surface: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """One row per equal-width bin of P(Surface), empty bins included.

    Columns: ``bin_lower``, ``bin_upper``, ``count``, ``mean_predicted`` (mean P(Surface) in the
    bin), ``observed_rate`` (share of Surface images in the bin) and ``gap``
    (``observed_rate - mean_predicted``; negative means over-confident about Surface). Means are
    NaN in empty bins.
    """
    y_true = np.asarray(y_true).astype(int)
    p_surface = _p_surface(p_surface)
    edges, ids = _bin_ids(p_surface, n_bins)
    count = np.bincount(ids, minlength=n_bins).astype(int)
    predicted_sum = np.bincount(ids, weights=p_surface, minlength=n_bins)
    observed_sum = np.bincount(ids, weights=y_true, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(count > 0, predicted_sum / count, np.nan)
        observed_rate = np.where(count > 0, observed_sum / count, np.nan)
    return pd.DataFrame({
        "bin_lower": edges[:-1], "bin_upper": edges[1:], "count": count,
        "mean_predicted": mean_predicted, "observed_rate": observed_rate,
        "gap": observed_rate - mean_predicted,
    })


def expected_calibration_error(y_true: np.ndarray, p_surface: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error of P(Surface), in [0, 1].

    Definition used: ``sum over bins b of (n_b / N) * |observed_rate_b - mean_predicted_b|`` with
    ``n_bins`` equal-width bins of P(Surface) on [0, 1] (the binary, "class-1" ECE; not the
    top-label ECE on max(p, 1 - p) that multi-class papers often report). Empty bins add nothing.
    """
    table = reliability_table(y_true, p_surface, n_bins)
    filled = table[table["count"] > 0]
    if filled.empty:
        return float("nan")
    weights = filled["count"] / filled["count"].sum()
    return float((weights * (filled["observed_rate"] - filled["mean_predicted"]).abs()).sum())


def _logits(p_surface: np.ndarray, eps: float = EPS) -> np.ndarray:
    """(N, 2) log-probabilities of Rover and Surface: valid logits for a softmax."""
    p = np.clip(p_surface, eps, 1 - eps)
    return np.log(np.stack([1 - p, p], axis=1))


def negative_log_likelihood(y_true: np.ndarray, probabilities: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the true labels under ``softmax(log p / temperature)`` (natural log)."""
    y_true = np.asarray(y_true).astype(int)
    log_probabilities = special.log_softmax(_logits(_p_surface(probabilities)) / temperature, axis=1)
    return float(-log_probabilities[np.arange(len(y_true)), y_true].mean())


def fit_temperature(y_true: np.ndarray, probabilities: np.ndarray, *,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(log p / T)`` on these labels.

    ``probabilities``: (N, 2) softmax outputs or P(Surface) of shape (N,), from the validation
    split (never the test split). Bounded scalar minimisation over log T within ``bounds``.
    """
    y_true = np.asarray(y_true).astype(int)
    logits = _logits(_p_surface(probabilities))
    if len(y_true) != len(logits):
        raise ValueError(f"y_true has {len(y_true)} entries, probabilities {len(logits)}")
    rows = np.arange(len(y_true))

    def nll(log_t: float) -> float:
        return float(-special.log_softmax(logits / np.exp(log_t), axis=1)[rows, y_true].mean())

    result = optimize.minimize_scalar(nll, bounds=np.log(bounds), method="bounded",
                                      options={"xatol": 1e-6})
    return float(np.exp(result.x))


def apply_temperature(p_surface: np.ndarray, temperature: float) -> np.ndarray:
    """P(Surface) after temperature scaling: ``softmax(log p / T)[:, 1]``.

    Accepts P(Surface) of shape (N,) or (N, 2) softmax outputs and returns the same shape.
    ``temperature=1`` returns the input (up to clipping within 1e-7 of 0 and 1).
    """
    if temperature <= 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    probabilities = np.asarray(p_surface, dtype="float64")
    scaled = special.softmax(_logits(_p_surface(probabilities)) / temperature, axis=1)
    return scaled if probabilities.ndim == 2 else scaled[:, 1]
