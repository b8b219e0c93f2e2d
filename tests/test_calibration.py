import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.special import expit
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss

from marsrover import plots
from marsrover.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_table,
)


def _calibrated_bins():
    """Every bin's Surface rate equals its predicted P(Surface): 1/20 at 0.05, 1/4 at 0.25, 3/4 at 0.75."""
    p = np.repeat([0.05, 0.25, 0.75], [20, 4, 4])
    y = np.concatenate([[1] + [0] * 19, [1, 0, 0, 0], [1, 1, 1, 0]])
    return y, p


def _overconfident(n=4000, true_temperature=2.0, seed=0):
    """Labels drawn from a calibrated model with logits z; the 'model' reports expit(T z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < expit(z)).astype(int)
    return y, expit(true_temperature * z)


def test_reliability_table_agrees_with_scikit_learn_and_counts_every_image():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.random(300), [0.0, 0.1, 0.5, 1.0]])  # inner edges go to the lower bin
    y = (rng.random(len(p)) < p).astype(int)
    table = reliability_table(y, p, n_bins=10)
    assert len(table) == 10 and table["count"].sum() == len(p)
    np.testing.assert_allclose(table["bin_lower"], np.linspace(0, 0.9, 10))
    observed, predicted = calibration_curve(y, p, n_bins=10)
    filled = table[table["count"] > 0]
    np.testing.assert_allclose(filled["observed_rate"], observed)
    np.testing.assert_allclose(filled["mean_predicted"], predicted)


def test_empty_bins_have_no_rates():
    table = reliability_table([0, 1], [0.12, 0.93], n_bins=5)
    assert table["count"].tolist() == [1, 0, 0, 0, 1]
    assert table["observed_rate"].isna().tolist() == [False, True, True, True, False]


def test_ece_is_zero_for_perfectly_calibrated_bins():
    y, p = _calibrated_bins()
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_a_constructed_miscalibrated_case():
    # Half the images at P(Surface)=0.9 but only half of them Surface (gap 0.4); half honest at 0.2.
    p = np.repeat([0.9, 0.2], 10)
    y = np.array([1, 0] * 5 + [1, 1] + [0] * 8)
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.0)
    assert expected_calibration_error(y[:10], p[:10]) == pytest.approx(0.4)


def test_temperature_one_is_the_identity():
    p = np.array([0.001, 0.2, 0.5, 0.77, 0.999])
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, rtol=1e-12, atol=1e-12)
    two_columns = np.stack([1 - p, p], axis=1)
    np.testing.assert_allclose(apply_temperature(two_columns, 1.0), two_columns, atol=1e-12)


def test_temperature_scaling_softens_and_keeps_the_predicted_class():
    p = np.array([0.01, 0.3, 0.5, 0.8, 0.999])
    softened = apply_temperature(p, 3.0)
    assert np.all(np.abs(softened - 0.5) <= np.abs(p - 0.5))
    np.testing.assert_array_equal(softened >= 0.5, p >= 0.5)
    assert np.isfinite(apply_temperature(np.array([0.0, 1.0]), 2.0)).all()  # saturated outputs
    with pytest.raises(ValueError):
        apply_temperature(p, 0.0)


def test_fit_temperature_recovers_the_true_temperature_and_lowers_nll():
    y, p = _overconfident(true_temperature=2.0)
    temperature = fit_temperature(y, p)
    assert temperature == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(y, np.stack([1 - p, p], axis=1)) == pytest.approx(temperature)
    before, after = negative_log_likelihood(y, p), negative_log_likelihood(y, apply_temperature(p, temperature))
    assert after < before
    assert after == pytest.approx(log_loss(y, apply_temperature(p, temperature)))
    assert negative_log_likelihood(y, p, temperature) == pytest.approx(after)
    assert expected_calibration_error(y, apply_temperature(p, temperature)) < expected_calibration_error(y, p)


def test_under_confident_models_get_a_temperature_below_one():
    y, p = _overconfident(true_temperature=0.5, seed=3)
    assert fit_temperature(y, p) == pytest.approx(0.5, rel=0.1)


def test_reliability_diagram_has_a_count_panel_on_request():
    y, p = _overconfident(n=200)
    tables = {"raw": reliability_table(y, p), "scaled": reliability_table(y, apply_temperature(p, 2.0))}
    fig = plots.reliability_diagram(tables)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
    plt.close(fig)
    fig = plots.reliability_diagram(tables, show_counts=False)
    assert len(fig.axes) == 1
    plt.close(fig)
