import logging

import numpy as np
import pytest

from neogen.calibration import Temperature, apply_temperature, fit_temperature
from neogen.evaluate import classification_metrics, expected_calibration_error


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def overconfident(n: int = 4000, k: int = 4, sharpen: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), scores softmax(sharpen x z): a model `sharpen` times too sure of itself."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    truth = softmax(z)
    y = np.array([rng.choice(k, p=row) for row in truth])
    return y, softmax(sharpen * z)


def test_temperature_keeps_the_argmax_and_inverts():
    _, probs = overconfident(n=50)
    scaled = apply_temperature(probs, 2.5)
    np.testing.assert_array_equal(scaled.argmax(1), probs.argmax(1))
    np.testing.assert_allclose(scaled.sum(1), 1.0)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-12)
    fitted = Temperature(2.5, "valid", 50, 0, 0, 0, 0)
    np.testing.assert_allclose(fitted.apply(fitted.apply(probs), inverse=True), probs, atol=1e-10)
    assert (scaled.max(1) <= probs.max(1) + 1e-12).all()  # T > 1 softens


def test_fit_recovers_a_known_overconfidence():
    y, probs = overconfident(sharpen=3.0)
    fitted = fit_temperature(y, probs, split="valid")
    assert fitted.temperature == pytest.approx(3.0, rel=0.1)
    assert fitted.log_loss_after < fitted.log_loss_before and fitted.ece_after < fitted.ece_before / 2
    assert fitted.n == len(y) and fitted.split == "valid"


def test_nothing_to_fit_on_keeps_t_one(caplog):
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])  # every row right: sharper is always better
    with caplog.at_level(logging.WARNING):
        fitted = fit_temperature(y, probs, split="valid")
    assert fitted.temperature == 1.0 and "cannot pin a temperature down" in caplog.text


def test_fit_to_the_largest_temperature_keeps_it(caplog):
    y, probs = overconfident(sharpen=40.0)  # far beyond what the bound of 20 can undo
    with caplog.at_level(logging.WARNING, logger="neogen"):
        fitted = fit_temperature(y, probs, split="valid")
    assert fitted.temperature == pytest.approx(20.0, rel=0.01) and "largest temperature" in caplog.text
    assert fitted.log_loss_after < fitted.log_loss_before


def test_save_load_round_trip(tmp_path):
    y, probs = overconfident(n=500)
    fitted = fit_temperature(y, probs, split="valid")
    fitted.save(tmp_path / "calibration.json")
    assert Temperature.load(tmp_path / "calibration.json") == fitted


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1]] * 10)
    assert expected_calibration_error(np.array([0] * 9 + [1]), probs) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0] * 5 + [1] * 5), probs) == pytest.approx(0.4)
    # Two bins: 0.6-confident rows all right (gap 0.4), 1.0-confident rows all right (gap 0): 0.4 x 2/4.
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(np.array([0, 0, 0, 1]), probs) == pytest.approx(0.2)
    assert classification_metrics([0, 0, 0, 1], probs, ["a", "b"])["ece"] == pytest.approx(0.2)
