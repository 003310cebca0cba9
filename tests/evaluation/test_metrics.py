import numpy as np
import pandas as pd
import pytest
import torch
from skimage import data
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from pipeline.evaluation.evaluate import evaluate_pairs, summarize
from pipeline.evaluation.metrics import image_metrics


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float()


def test_metrics_match_scikit_image_reference(rng):
    clean = data.astronaut()[100:228, 150:278].astype(np.float32) / 255
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    ours = image_metrics(_chw(noisy), _chw(clean))
    assert ours["psnr"] == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=1.0), abs=1e-3)
    assert ours["mse"] == pytest.approx(mean_squared_error(clean, noisy), rel=1e-5)
    reference_ssim = structural_similarity(clean, noisy, data_range=1.0, channel_axis=2,
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours["ssim"] == pytest.approx(reference_ssim, abs=2e-3)


def test_identity_baseline_and_gain():
    clean = np.full((16, 16, 3), 100, np.uint8)
    moire = clean.copy()
    moire[::2] = 110
    per_image = evaluate_pairs(lambda x: torch.full_like(x, 100 / 255), [(moire, clean)], ["a.png"])
    summary = summarize(per_image)
    assert summary["count"] == 1
    assert summary["psnr"] > 90  # perfect restoration (float32 rounding only)
    assert summary["identity_psnr"] == pytest.approx(10 * np.log10(1 / ((10 / 255) ** 2 / 2)), abs=1e-3)
    assert summary["psnr_gain_over_identity"] == pytest.approx(summary["psnr"] - summary["identity_psnr"])
    assert isinstance(per_image, pd.DataFrame) and list(per_image.image) == ["a.png"]
