"""The sensor: integration over each pixel's area, exposure, a Bayer colour filter array, and noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.moire.portable import portable

# Which RGB channel each position of the 2×2 RGGB tile records: rows then columns.
RGGB = ((0, 1), (1, 2))


def aperture_offsets(supersample: int, aperture: torch.Tensor) -> torch.Tensor:
    """(B, s) positions of a pixel's s sub-samples along one axis, in pixels from its centre.

    The sub-samples sit at the centres of s equal cells spanning the light-sensitive part of the
    pixel, `aperture` being that part's fraction of the pitch (1 = the whole pixel); a narrower
    aperture samples the display more like points, so more of its structure aliases into moiré.
    """
    cells = (torch.arange(supersample, dtype=torch.float64, device=aperture.device) + 0.5) / supersample - 0.5
    return aperture.to(torch.float64).reshape(-1, 1) * cells


def integrate_pixel_area(samples: torch.Tensor, supersample: int) -> torch.Tensor:
    """Average s×s sub-samples (B, C, H·s, W·s) of each pixel's sensitive area → (B, C, H, W)."""
    return samples if supersample == 1 else F.avg_pool2d(samples, supersample)


# Rec. 709 luma of linear RGB: what a camera's exposure meter weighs.
METER_WEIGHTS = (0.2126, 0.7152, 0.0722)
METER_GAIN_LIMITS = (0.25, 4.0)  # a real meter's range: ±2 stops around the fixed exposure
METER_GAMMA = 2.2  # brightness as the encoded image shows it
METER_HIGHLIGHT_QUANTILE = 0.995  # the brightness the meter keeps from clipping
METER_STRIDE = 7  # the meter reads every 7th pixel, as a phone's meter reads a coarse grid: brightness and
                  # highlights of a whole frame at full resolution cost more than the rest of the meter


def power_law(light: torch.Tensor, exponent: torch.Tensor | float, ceiling: float | None = None) -> torch.Tensor:
    """light ** exponent for light ≥ 0 (negatives count as 0; above `ceiling`, as `ceiling`), as
    exp(exponent · log(light)) in float64, rounded once (the same bits on any CPU: pipeline.moire.portable), a new
    tensor of light's dtype.

    On one core of an AMD Zen 1 at 3 × 512² values: 9.5 ms, MKL's float32 exp(log) 4.1 ms, torch's float32 power
    10.1 ms. Black is floored at float32's smallest normal number first: a log of exact zeros took 16 µs per
    thousand zeros here (a frame half black: 8 ms instead of 0.2), so black comes out as about
    1e-17 instead of 0, far below any 8-bit level.
    """
    floor = torch.finfo(light.dtype).tiny
    return portable(lambda x: x.clamp(min=floor, max=ceiling).log_().mul_(exponent).exp_(), light)


def upper_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """(B,) `torch.quantile(values, q, dim=1)` of (B, N) values, the same numbers, for q near 1.

    torch.quantile sorts all N values (2.3 ms for a 512² frame's meter samples on one core); only
    the two around rank q·(N − 1) matter, and a partial sort of the top ones finds them in 0.12 ms.
    """
    count = values.shape[1]
    rank = torch.tensor(q, dtype=values.dtype) * (count - 1)  # as torch.quantile computes it
    below = int(rank)
    top = torch.topk(values, count - below, dim=1, sorted=True).values  # descending: ranks N−1 … below
    above = top[:, -2] if count - below > 1 else top[:, -1]
    return torch.lerp(top[:, -1], above, (rank - below).to(values.device))


def metered_gain(irradiance: torch.Tensor, reference: torch.Tensor, exposure_ev: torch.Tensor,
                 gamma: float = METER_GAMMA) -> torch.Tensor:
    """(B,) exposure gain: the capture at the mean brightness of `reference` (both linear light, any size), off by
    `exposure_ev` stops, but never so bright that more than a sliver of it clips.

    A camera's auto-exposure brings the photographed screen to a standard brightness whatever the
    panel's brightness or the light its black matrix swallows; metering against the content's own
    light makes that standard the source's, so a dataset of captures has no built-in brightening or
    darkening. Brightness is compared as it will be seen: the luma-weighted mean of the channels
    encoded with `gamma`; a power law scales exactly, so the gain is closed-form. Exposure errors are then sampled on both sides of it.
    """
    weights = torch.tensor(METER_WEIGHTS, dtype=irradiance.dtype, device=irradiance.device).reshape(1, 3, 1)

    def metered(light: torch.Tensor) -> torch.Tensor:
        return light.to(irradiance.dtype).flatten(2)[..., ::METER_STRIDE]

    def brightness(light: torch.Tensor) -> torch.Tensor:
        # each channel encoded on its own, as the image stores it: colour moiré must not read as light
        return (power_law(metered(light), 1.0 / gamma) * weights).sum(dim=1).mean(dim=1)

    ratio = brightness(reference) / brightness(irradiance).clamp(min=1e-6)
    # Highlight protection: no more than a sliver of the frame may clip, as a phone's meter keeps
    # a white page below full scale; strong moiré on white would otherwise be clipped flat.
    luma = (metered(irradiance) * weights).sum(dim=1)
    highlight = 1.0 / upper_quantile(luma.float(), METER_HIGHLIGHT_QUANTILE).to(irradiance.dtype).clamp(min=1e-6)
    wanted = ratio**gamma * torch.exp2(exposure_ev.to(irradiance.dtype))
    return torch.minimum(wanted, highlight).clamp(*METER_GAIN_LIMITS)


def crosstalk_weights(crosstalk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b), each (B, 1, 1, 1), of the filters' response a·I + b·J (J all ones) for each capture's crosstalk c.

    A filter passes its own primary and a share c of each other one, normalised so white stays white:
    own 1 / (1 + 2c), each other c / (1 + 2c). NaN (not drawn) is no crosstalk.
    """
    c = torch.nan_to_num(crosstalk, nan=0.0).reshape(-1, 1, 1, 1)
    return (1.0 - c) / (1.0 + 2.0 * c), c / (1.0 + 2.0 * c)


def mix_crosstalk(light: torch.Tensor, crosstalk: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) light as each colour filter passes it: its own primary and a share of the others."""
    if torch.isnan(crosstalk).all():
        return light
    a, b = crosstalk_weights(crosstalk)
    return a * light + b * light.sum(dim=1, keepdim=True)


def bayer_mosaic(rgb: torch.Tensor) -> torch.Tensor:
    """Keep one colour per pixel following the RGGB pattern: (B, 3, H, W) → (B, 1, H, W)."""
    raw = torch.empty_like(rgb[:, :1])
    for dy in (0, 1):
        for dx in (0, 1):
            channel = RGGB[dy][dx]
            raw[:, 0, dy::2, dx::2] = rgb[:, channel, dy::2, dx::2]
    return raw


def add_sensor_noise(
    raw: torch.Tensor, shot_noise: torch.Tensor, read_noise: torch.Tensor, noise_seeds: list[int]
) -> torch.Tensor:
    """Heteroscedastic Gaussian noise: variance shot·signal + read², clipped to the sensor's [0, 1].

    Each capture draws from its own seed, so its noise does not depend on the rest of the batch.
    """
    shot = shot_noise.reshape(-1, 1, 1, 1)
    read = read_noise.reshape(-1, 1, 1, 1)
    # 1 / (1 / √v) in divisions and a square root, which IEEE rounds alike on every CPU (torch's sqrt is MKL's,
    # whose last bits are the CPU's: pipeline.moire.portable), and as fast; √0 stays 0
    std = raw.clamp(min=0.0).mul_(shot).add_(read**2).rsqrt_().reciprocal_()
    noise = torch.empty_like(raw)
    for item, seed in zip(noise, noise_seeds):  # drawn in place: randn's numbers without a copy of each
        item.normal_(generator=torch.Generator(device=raw.device).manual_seed(seed))
    return noise.mul_(std).add_(raw).clamp_(0.0, 1.0)
