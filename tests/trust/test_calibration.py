"""Temperature scaling and expected calibration error on logits whose true calibration is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dunemap.errors import InputError
from dunemap.trust.calibration import ReliabilityAccumulator, fit_temperature, plot_reliability, reliability


def _sample(temperature: float, n: int = 20000, k: int = 5, seed: int = 0):
    """Labels drawn from softmax(z); the model reports z * temperature (over-confident when > 1)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, generator=g, dtype=torch.float64) * 2.0
    labels = torch.multinomial(torch.softmax(z, dim=1), 1, generator=g).squeeze(1)
    return z * temperature, labels


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    logits, labels = _sample(3.0)
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.05)
    logits, labels = _sample(0.5, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.05)


def test_ece_drops_after_temperature_scaling():
    logits, labels = _sample(3.0)
    t = fit_temperature(logits, labels)
    def ece(scale):
        probs = torch.softmax(logits / scale, dim=1)
        top, pred = probs.max(dim=1)
        return reliability(top.numpy(), (pred == labels).numpy()).ece
    before, after = ece(1.0), ece(t)
    assert before > 0.1
    assert after < before / 4


def test_reliability_matches_a_hand_count():
    rel = reliability(np.array([0.05, 0.95, 0.95, 0.55]), np.array([False, True, False, True]), bins=10)
    assert rel.count.tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert rel.accuracy[9] == 0.5 and rel.confidence[9] == pytest.approx(0.95)
    # ECE = 1/4*|0-0.05| + 1/4*|1-0.55| + 2/4*|0.5-0.95|
    assert rel.ece == pytest.approx(0.25 * 0.05 + 0.25 * 0.45 + 0.5 * 0.45)


def test_accumulator_equals_one_pass_and_skips_ignored_pixels(tmp_path):
    logits, labels = _sample(2.0, n=4096, k=4)
    img = logits.float().T.reshape(1, 4, 64, 64)
    lab = labels.reshape(1, 64, 64).clone()
    lab[0, :8] = 255
    acc = ReliabilityAccumulator({"raw": 1.0, "calibrated": 2.0})
    acc.update(img[..., :32], lab[..., :32])
    acc.update(img[..., 32:], lab[..., 32:])
    keep = (lab != 255).ravel()
    probs = torch.softmax(img.permute(0, 2, 3, 1).reshape(-1, 4)[keep] / 2.0, dim=1)
    top, pred = probs.max(dim=1)
    whole = reliability(top.numpy(), (pred == lab.ravel()[keep]).numpy())
    assert acc.result("calibrated").count.tolist() == whole.count.tolist()
    assert acc.result("calibrated").ece == pytest.approx(whole.ece, abs=1e-9)
    png = plot_reliability({"raw": acc.result("raw"), "calibrated": acc.result("calibrated")}, tmp_path / "rel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_temperature_refuses_nonfinite_or_empty():
    with pytest.raises(InputError, match="non-finite"):
        fit_temperature(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(InputError, match="no labelled"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_a_temperature_stopped_at_its_bound_is_announced(caplog):
    """Confident logits with labels unrelated to them: the NLL falls towards T -> inf, so the fit stops at 20."""
    from dunemap.trust.calibration import T_RANGE, at_bound
    from dunemap.trust.fit import TrustFit

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 4, generator=g, dtype=torch.float64) * 10
    labels = torch.randint(0, 4, (5000,), generator=g)
    with caplog.at_level("WARNING", logger="dunemap.trust.calibration"):
        t = fit_temperature(logits, labels)
    assert t == T_RANGE[1] and at_bound(t)
    assert "stopped at its bound T = 20.000" in caplog.text
    summary = TrustFit({"temperature": t, "split": "val", "pixels": 5000, "ece_before": 0.5, "ece_after": 0.1},
                       None).summary()
    assert "T stopped at its bound 20.000" in summary
    caplog.clear()
    logits, labels = _sample(3.0)
    with caplog.at_level("WARNING", logger="dunemap.trust.calibration"):
        assert not at_bound(fit_temperature(logits, labels))
    assert caplog.text == ""


def test_evaluate_summary_says_when_no_labelled_pixel_is_outside():
    """trust_over's report has ``outside: None`` when no pixel is outside; the printed line says so, not "nan"."""
    from dunemap.trust.report import trust_lines

    report = {"calibration": {"temperature": 1.2, "ece_uncalibrated": 0.1, "ece_calibrated": 0.05},
              "applicability": {"threshold": 0.3, "share_outside": 0.0, "inside": {"miou": 0.75}, "outside": None}}
    line = trust_lines(report)[1]
    assert "nan" not in line
    assert line.endswith("mIoU inside 0.7500, outside - (no labelled pixel)")
