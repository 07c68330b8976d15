"""On a CUDA device: the same weights predict the same on CUDA and CPU, and an ensemble trained on
CUDA is as good as one trained on CPU. Marked ``gpu`` (excluded by default; run with ``-m gpu``).

Tolerances: predictions within 1e-5 in P(up) (float32 matrix products in another order; TF32 is off
by default for float32 in torch); trained ensembles within 0.01 in validation accuracy and 0.005 in
log loss on 40,000 validation rows (a different summation order changes the trajectory, not the
quality). Imports no Dagster, so it runs on a bare GPU machine with torch and Lightning.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stage2_assets.ml.ensemble import member_probabilities
from stage2_assets.ml.metrics import classification_metrics
from stage2_assets.ml.training import train_ensemble

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

FEATURES = 12


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable but noisy problem: P(up) is logistic in a fixed mix of the features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
    weights = np.linspace(-0.4, 0.4, FEATURES, dtype=np.float32)
    logit = x @ weights + 0.3 * np.tanh(x[:, 0] * x[:, 1])
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return x, y


def _train(accelerator: str, x, y, xv, yv):
    return train_ensemble(
        x,
        y,
        xv,
        yv,
        num_members=3,
        hidden=32,
        learning_rate=0.003,
        batch_size=1024,
        max_epochs=8,
        patience=3,
        seed=5,
        trainer_overrides={"accelerator": accelerator},
    )


def test_same_weights_predict_the_same_on_cuda_and_cpu():
    x, y = _data(20_000, 1)
    xv, yv = _data(20_000, 2)
    trained = _train("cpu", x, y, xv, yv)
    on_cpu = member_probabilities(trained.model, xv)
    on_cuda = member_probabilities(trained.model.to("cuda"), xv)
    assert next(trained.model.parameters()).device.type == "cuda"
    assert on_cuda.shape == on_cpu.shape == (3, 20_000)
    assert np.abs(on_cuda - on_cpu).max() < 1e-5
    # the model learned something, so the comparison is not between constants
    assert on_cpu.std() > 0.05


def test_an_ensemble_trained_on_cuda_is_as_good_as_on_cpu():
    x, y = _data(80_000, 3)
    xv, yv = _data(40_000, 4)
    cpu = _train("cpu", x, y, xv, yv)
    cuda = _train("gpu", x, y, xv, yv)
    assert cpu.device == "cpu"
    assert cuda.device.startswith("cuda")
    m_cpu = classification_metrics(member_probabilities(cpu.model, xv).mean(0), yv)
    m_cuda = classification_metrics(member_probabilities(cuda.model, xv).mean(0), yv)
    assert m_cpu["accuracy"] > 0.6  # the problem is learnable: both are far from a coin
    assert abs(m_cuda["accuracy"] - m_cpu["accuracy"]) < 0.01
    assert abs(m_cuda["log_loss"] - m_cpu["log_loss"]) < 0.005
