import numpy as np
import pytest
from sklearn import metrics as skm

from marsrover.evaluation import binary_metrics, majority_baseline, predict_surface_probability

Y_TRUE = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
P_SURFACE = np.array([0.1, 0.2, 0.6, 0.3, 0.05, 0.4, 0.9, 0.7, 0.45, 0.8])


def test_binary_metrics_agree_with_scikit_learn():
    scores = binary_metrics(Y_TRUE, P_SURFACE)
    y_pred = (P_SURFACE >= 0.5).astype(int)
    assert scores["n"] == 10
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["balanced_accuracy"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert scores["macro_f1"] == pytest.approx(skm.f1_score(Y_TRUE, y_pred, average="macro"))
    assert scores["roc_auc"] == pytest.approx(skm.roc_auc_score(Y_TRUE, P_SURFACE))
    assert scores["confusion_matrix"] == [[5, 1], [1, 3]]


def test_roc_auc_is_none_when_a_split_has_one_class():
    assert binary_metrics(np.zeros(4), np.array([0.1, 0.7, 0.2, 0.3]))["roc_auc"] is None


def test_the_majority_baseline_answers_the_commonest_label():
    baseline = majority_baseline(Y_TRUE)
    assert baseline["answer"] == "Rover"
    assert baseline["accuracy"] == pytest.approx(0.6) and baseline["balanced_accuracy"] == pytest.approx(0.5)


def test_prediction_is_one_batched_call():
    class CountingModel:
        calls = 0

        def predict(self, images, batch_size, verbose):
            CountingModel.calls += 1
            return np.stack([1 - images[:, 0, 0, 0] / 255, images[:, 0, 0, 0] / 255], axis=1)

    images = np.zeros((300, 2, 2, 3), dtype="uint8")
    images[:100] = 255
    p = predict_surface_probability(CountingModel(), images)
    assert CountingModel.calls == 1 and p.shape == (300,)
    assert p[:100].min() == 1.0 and p[100:].max() == 0.0
