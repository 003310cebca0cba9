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


def test_tone_alignment_undoes_a_global_gain_and_offset_per_channel(rng):
    from pipeline.evaluation.tone import align_tone

    clean = torch.rand(3, 32, 40, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    gains, offsets = torch.tensor([0.7, 1.1, 0.9]), torch.tensor([0.05, -0.04, 0.02])
    toned = (clean * gains[:, None, None] + offsets[:, None, None]).clamp(0, 1)
    assert image_metrics(toned, clean)["psnr"] < 25
    assert image_metrics(align_tone(toned, clean), clean)["psnr"] > 60
    flat = torch.full_like(clean, 0.5)  # no gain to fit: the target's mean per channel
    assert torch.allclose(align_tone(flat, clean), clean.mean(dim=(1, 2), keepdim=True).expand_as(clean), atol=1e-6)


def test_an_output_off_only_in_global_tone_has_no_residual_energy_in_any_band():
    from pipeline.evaluation.evaluate import image_scores
    from pipeline.evaluation.residual_bands import BANDS, band_energies

    clean = torch.rand(3, 32, 40, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    gains, offsets = torch.tensor([0.7, 1.05, 0.9]), torch.tensor([0.05, -0.04, 0.02])
    toned = clean * gains[:, None, None] + offsets[:, None, None]  # within [0, 1]: nothing clamped
    assert min(band_energies(toned - clean).values()) > 1e-6  # the raw residual has energy in every band
    scores = image_scores(toned, clean)
    assert scores["tone_psnr"] > 60 and scores["psnr"] < 25
    for band in BANDS:
        assert scores[f"residual_{band}"] < 1e-10, band


def test_band_energies_put_a_stripe_pattern_in_its_band_and_sum_to_its_power():
    from pipeline.evaluation.residual_bands import BANDS, band_energies, removed_fraction

    ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    for period, band in ((64.0, "low"), (16.0, "mid"), (4.0, "high")):
        stripes = 0.1 * torch.cos(2 * torch.pi * xs / period).expand(3, -1, -1)
        energies = band_energies(stripes)
        assert max(energies, key=energies.get) == band
        assert energies[band] / sum(energies.values()) > 0.95
        # Hann-windowed power of a cosine of amplitude A over 3 channels: 3·A²/2
        assert sum(energies.values()) == pytest.approx(3 * 0.1**2 / 2, rel=0.1)
    assert removed_fraction(0.25, 1.0) == 0.75 and removed_fraction(2.0, 1.0) == -1.0
    assert np.isnan(removed_fraction(0.0, 0.0))
    # the edges in cycles per pixel: periods over 32 px are low, 8 to 32 px mid, under 8 px high
    assert BANDS == {"low": (0.0, 1 / 32), "mid": (1 / 32, 1 / 8), "high": (1 / 8, float("inf"))}


def test_summary_reports_tone_aligned_gain_and_moire_removed_per_band():
    ys, xs = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    clean = np.stack([np.clip(60 + 2 * xs + ys, 0, 255)] * 3, axis=-1).astype(np.uint8)
    stripes = 20 * np.cos(2 * np.pi * xs / 16)[..., None]
    moire = np.clip(0.8 * clean + stripes, 0, 255).astype(np.uint8)  # darker and striped
    darker = to_chw_uint8(np.clip(0.8 * clean, 0, 255).astype(np.uint8))
    per_image = evaluate_pairs(lambda x: darker, [(moire, clean)], ["a.png"])
    summary = summarize(per_image)
    # the output keeps the input's tone but has no stripes: raw gain small, tone-aligned gain large
    assert summary["tone_psnr_gain_over_identity"] > 10
    assert summary["tone_psnr_gain_over_identity"] > summary["psnr_gain_over_identity"]
    assert summary["moire_removed_mid"] > 0.99


def to_chw_uint8(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def test_ssim_over_strips_equals_torchmetrics_on_the_whole_image(rng):
    from torchmetrics.functional.image import structural_similarity_index_measure

    from pipeline.evaluation.metrics import batch_ssim

    clean = torch.from_numpy(rng.uniform(0, 1, (2, 3, 67, 45))).float()
    noisy = (clean + torch.from_numpy(rng.normal(0, 0.1, clean.shape)).float()).clamp(0, 1)
    whole = structural_similarity_index_measure(noisy, clean, data_range=1.0, reduction="none")
    for rows in (1, 4, 20, 66):  # strips of these many rows: top, inner and bottom strips, some shorter than the halo
        strips = batch_ssim(noisy, clean, strip_values=rows * 2 * 3 * 45)
        assert torch.allclose(strips, whole, rtol=0, atol=1e-6), rows
    assert torch.equal(batch_ssim(noisy, clean), whole)  # fits one strip: torchmetrics' own value


@pytest.mark.parametrize("height, width", [(40, 56), (41, 57), (64, 33), (9, 2)])
def test_band_energies_from_the_half_spectrum_equal_the_whole_spectrums_band_by_band(rng, height, width):
    from pipeline.evaluation.residual_bands import BANDS, band_energies

    residual = torch.from_numpy(rng.normal(0, 0.1, (3, height, width)))
    def hann(n: int) -> torch.Tensor:  # as the module windows each side: no window on a side of 2 or less
        if n <= 2:
            return torch.ones(n, dtype=torch.float64)
        return torch.hann_window(n, periodic=False, dtype=torch.float64)

    window = hann(height)[:, None] * hann(width)[None, :]
    centred = residual - (residual * window).sum(dim=(-2, -1), keepdim=True) / window.sum()
    power = (torch.fft.fft2(centred * window).abs() ** 2 / (window**2).sum()).sum(dim=0) / (height * width)
    radius = torch.hypot(torch.fft.fftfreq(height, dtype=torch.float64)[:, None],
                         torch.fft.fftfreq(width, dtype=torch.float64)[None, :])
    energies = band_energies(residual)
    for name, (low, high) in BANDS.items():
        whole = float(power[(radius > 0) & (radius >= low) & (radius < high)].sum())
        assert energies[name] == pytest.approx(whole, rel=1e-12, abs=1e-18), name


def test_tone_alignment_and_band_energies_keep_their_values_channel_by_channel(rng):
    from pipeline.evaluation.residual_bands import band_energies
    from pipeline.evaluation.tone import align_tone

    image = torch.from_numpy(rng.uniform(0, 1, (3, 40, 56))).float()
    target = torch.from_numpy(rng.uniform(0, 1, (3, 40, 56))).float()
    # the all-channels-at-once forms these functions had before they went channel by channel
    x, y = image.double().flatten(1), target.double().flatten(1)
    xm, ym = x.mean(dim=1, keepdim=True), y.mean(dim=1, keepdim=True)
    gain = ((x - xm) * (y - ym)).mean(dim=1, keepdim=True) / ((x - xm) ** 2).mean(dim=1, keepdim=True)
    assert torch.allclose(align_tone(image, target), (gain * (x - xm) + ym).clamp(0, 1).reshape(3, 40, 56).float(),
                          rtol=0, atol=1e-7)
    plane = (image - target).double()
    window = torch.hann_window(40, periodic=False, dtype=torch.float64)[:, None] * torch.hann_window(
        56, periodic=False, dtype=torch.float64)[None, :]
    centred = plane - (plane * window).sum(dim=(-2, -1), keepdim=True) / window.sum()
    power = (torch.fft.fft2(centred * window).abs() ** 2 / (window**2).sum()).sum(dim=0) / (40 * 56)
    assert sum(band_energies(image - target).values()) == pytest.approx(float(power[1:, :].sum() + power[0, 1:].sum()),
                                                                          rel=1e-12)
