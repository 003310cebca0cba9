"""What a restorer may change: its whole correction, only the correction's colour (chroma), and only its
detail and its mean (`width`).

Screen moiré in phone photos is mostly colour: the camera's colour mosaic aliases the screen's
subpixel grid into colour bands, while its luma is what the photo's tone, blur and alignment
shape too — and those differ from one real set to the next. A model that may change only the
chroma of its input keeps every photo's luma (tone and detail) as it is and removes the colour bands.

A network trained on small patches never sees structure much wider than a patch: what its correction
holds at those widths is a guess of the photo's colour cast made patch by patch, which varies over the
frame and follows the content. With a `width` σ, the part of the correction wider than a Gaussian of σ
pixels is removed but for its mean over the whole image (also when the image is restored in tiles):
the model removes moiré narrower than that and shifts the image's colour as a whole, with no wider
structure in between (measured on real photos: docs/benchmarks.md).

That shift of the whole image is applied as a gain of each channel (`cast: gain`), as a white balance
is, not added to every pixel alike (`offset`, the form of models trained before `gain`): an offset lifts
black — a photo's black bars, a screen's dark background — where a real colour cast does not reach, and
SSIM there falls with a level or two (measured: docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ParamsError
from pipeline.models.mscale import image_pyramid
from pipeline.moire.jpeg import RGB_TO_YCBCR as JPEG_RGB_TO_YCBCR
from pipeline.moire.optics import blur_radius, gaussian_kernels

CORRECTIONS = ("full", "chroma")
CASTS = ("gain", "offset")  # how the correction's mean over the image reaches each pixel (Narrowing)
# Luma and colour differences as the simulated camera's JPEG defines them (BT.601 on gamma-encoded RGB).
RGB_TO_YCBCR = torch.tensor(JPEG_RGB_TO_YCBCR, dtype=torch.float64)


def chroma_projection() -> torch.Tensor:
    """The 3×3 map of an RGB difference to the difference with the same Cb and Cr and no luma."""
    keep_chroma = torch.diag(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    return (torch.linalg.inv(RGB_TO_YCBCR) @ keep_chroma @ RGB_TO_YCBCR).float()


class GaussianBlur(nn.Module):
    """A Gaussian blur of σ pixels of any N×C×H×W batch, each channel alone, edges repeated.

    A blur this wide holds next to nothing finer than σ / 4 pixels, so it is computed on the image box-averaged
    by that factor and interpolated back: at σ = 16 on a 4K channel 19× faster than at full resolution, and
    within 3 % of it (rms) away from the edges (tests/models/test_correction.py).
    """

    def __init__(self, sigma: float):
        super().__init__()
        self.factor = max(1, int(sigma // 4))
        small_sigma = torch.tensor([sigma / self.factor], dtype=torch.float64)
        kernel = gaussian_kernels(small_sigma, blur_radius(small_sigma))[0].float()  # the lens blur's, 3σ each side
        self.radius = kernel.numel() // 2
        self.register_buffer("kernel", kernel, persistent=False)  # a fixed map, not part of the weights

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        small = F.avg_pool2d(image, self.factor, ceil_mode=True) if self.factor > 1 else image
        channels, kernel = small.shape[1], self.kernel.to(small)
        padded = F.pad(small, (self.radius,) * 4, mode="replicate")
        rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
        blurred = F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
        if self.factor == 1:
            return blurred
        return F.interpolate(blurred, size=(height, width), mode="bilinear", align_corners=False)


class Narrowing(nn.Module):
    """Keeps the part of a correction narrower than a Gaussian of `width` σ pixels, and its mean over the image:
    as a gain of each input channel (`gain`; projected to chroma with `chroma`, so the mean is all it adds to
    a chroma correction) or added to every pixel alike (`offset`)."""

    def __init__(self, width: float = 0.0, cast: str = "offset", chroma: bool = False):
        super().__init__()
        if cast not in CASTS:
            raise ParamsError(f"correction cast {cast!r}: choose one of {', '.join(CASTS)}")
        self.width, self.cast = float(width), cast
        # the Gaussian of each output scale (σ, σ/2, σ/4 for the coarser outputs of multi-scale nets)
        self.blurs = nn.ModuleList([GaussianBlur(self.width / 2**level) for level in range(3)] if self.width else [])
        self.register_buffer("projection", chroma_projection() if chroma else torch.eye(3), persistent=False)

    def wide(self, correction: torch.Tensor, level: int = 0) -> torch.Tensor:
        """The part of `correction` wider than the Gaussian of `level`'s σ, each channel alone."""
        return self.blurs[level](correction)

    def mean_as_map(self, wide_mean: torch.Tensor, x_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, b), N×3×3 and N×3, with A·x + b at each pixel the wide correction's mean (`wide_mean`, N×3) applied to
        an input whose mean is `x_mean` (N×3): A·x_mean + b = wide_mean either way."""
        if self.cast == "offset":
            return torch.zeros(*wide_mean.shape, 3, dtype=wide_mean.dtype, device=wide_mean.device), wide_mean
        # 1/255: a black channel's gain stays bounded (and what it scales is next to zero)
        gain = wide_mean / x_mean.clamp_min(1 / 255)
        return self.projection.to(gain) @ torch.diag_embed(gain), torch.zeros_like(wide_mean)

    def forward(self, restored: torch.Tensor, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        """`x` plus the narrow part and the mean of `restored − x`; `restored` if no width."""
        if not self.width:
            return restored
        wide = self.wide(restored - x, level)
        matrix, offset = self.mean_as_map(wide.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)))
        # the correction's mean stays exactly (to rounding): A·mean(x) + b = mean(wide)
        return restored - wide + torch.einsum("nck,nkhw->nchw", matrix, x) + offset[..., None, None]


class RestrictedCorrection(nn.Module):
    """`net`'s output with its correction restricted: to its chroma (`chroma`), and, with `width` σ > 0, to its
    part narrower than a Gaussian of σ pixels plus its mean over the image.

    The first is pointwise, so tiles can apply it; the second needs the whole image, so a tiled restoration
    (pipeline.inference) runs `pointwise` on each tile and `narrowing` once on the blended image, and an export
    holds `pointwise` alone, `ExportedModel` applying the narrowing (pipeline.export).
    """

    def __init__(self, net: nn.Module, chroma: bool, width: float = 0.0, cast: str = "offset"):
        super().__init__()
        from pipeline.inference import spatial_multiple

        self.net, self.chroma = net, chroma
        self.multiple = spatial_multiple(net)  # tiles and padding follow the wrapped net's grid
        # a 1×1 convolution (pointwise, so tiles and exports see the same map); not part of the weights
        self.register_buffer("projection", chroma_projection()[:, :, None, None], persistent=False)
        self.narrowing = Narrowing(width, cast, chroma)

    def restricted_pointwise(self, restored: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`x` plus `restored − x`, only its chroma when `chroma`."""
        if not self.chroma:
            return restored
        return x + F.conv2d(restored - x, self.projection.to(restored.dtype))

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """The restoration a tile can compute alone: the net, its correction restricted to chroma when `chroma`."""
        return self.restricted_pointwise(self.net(x), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.narrowing(self.pointwise(x), x)


class MultiScaleRestrictedCorrection(RestrictedCorrection):
    """RestrictedCorrection of a multi-scale net, its coarser outputs too (for deep supervision)."""

    def forward_multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The net's [full, 1/2, 1/4] outputs, each restricted as the full one is, at its own scale."""
        return [self.narrowing(self.restricted_pointwise(output, scaled), scaled, level)
                for level, (output, scaled) in enumerate(zip(self.net.forward_multiscale(x), image_pyramid(x)))]


def with_correction(net: nn.Module, correction: str, width: float = 0.0, cast: str = "offset") -> nn.Module:
    """`net` as it is (`full`, no `width`), or wrapped so only the chroma of its correction (`chroma`) and/or
    only its detail and mean (`width` > 0, the mean applied as `cast`) reach the output."""
    if correction not in CORRECTIONS:
        raise ParamsError(f"correction {correction!r}: choose one of {', '.join(CORRECTIONS)}")
    if correction == "full" and not width:
        return net
    wrapper = MultiScaleRestrictedCorrection if hasattr(net, "forward_multiscale") else RestrictedCorrection
    return wrapper(net, chroma=correction == "chroma", width=width, cast=cast)
