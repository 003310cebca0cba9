"""Procedurally rendered screen content: documents, code, UI layouts, charts and web-like pages.

Real moiré photos are mostly of screens showing text and interfaces, so the default dataset must
not be photos only. Everything is drawn with PIL from a numpy Generator: same seed, same pixels.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import matplotlib.colors
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SCREEN_KINDS = ("document", "code", "ui", "chart", "webpage", "scene")
CANVAS = 512

_FONT_FILES = {
    "sans": "DejaVuSans.ttf",
    "sans_bold": "DejaVuSans-Bold.ttf",
    "serif": "DejaVuSerif.ttf",
    "mono": "DejaVuSansMono.ttf",
}
_WORDS = (
    "screen camera pixel moire pattern display sensor photo light colour image model data signal "
    "frequency alias grid line text report chart value table result method design system network "
    "train test layer filter noise window button panel menu file edit view help search page "
    "account profile settings update download share open close save print total average growth "
    "market price quarter annual summary overview detail project status review meeting schedule"
).split()
_CODE_TOKENS = ("def", "return", "for", "in", "if", "else", "import", "class", "self", "None",
                "True", "x", "y", "np", "torch", "=", "(", ")", ":", "+", "[0]", "0.5", "len")
_PALETTES = (
    ((250, 250, 250), (30, 30, 30), (40, 90, 200)),
    ((255, 255, 255), (20, 20, 20), (200, 40, 40)),
    ((30, 32, 40), (220, 220, 220), (90, 200, 120)),
    ((245, 240, 230), (50, 40, 30), (180, 110, 20)),
    ((12, 12, 12), (240, 240, 240), (240, 180, 40)),
)


@lru_cache(maxsize=32)
def _font(family: str, size: int) -> ImageFont.FreeTypeFont:
    """A DejaVu font shipped with matplotlib, so text renders identically everywhere."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / _FONT_FILES[family]
    return ImageFont.truetype(str(path), size)


def render_screen_content(kind: str, rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """Render one screenful of `kind` content as an RGB uint8 array of size×size."""
    if kind == "scene":
        return natural_scene(rng, size)
    palette = _PALETTES[int(rng.integers(len(_PALETTES)))]
    image = Image.new("RGB", (size, size), palette[0])
    draw = ImageDraw.Draw(image)
    {"document": _document, "code": _code, "ui": _ui, "chart": _chart, "webpage": _webpage}[kind](
        draw, rng, size, palette
    )
    return np.asarray(image)


def natural_scene(rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """A photo-like scene: the dead-leaves model of natural images, shaded and textured.

    Occluding shapes whose radii follow the r⁻³ law of natural scenes (so the picture is
    scale-invariant, with a 1/f² power spectrum), colours drawn around a few hues per picture,
    smooth illumination, fine fractal texture and a camera's softness. Restoration networks trained
    on such images learn what natural detail looks like (Achddou et al., 2021), which the few
    photos bundled with our libraries cannot teach: a demoiré model must leave grass, fur and skin
    texture alone.
    """
    hues = rng.uniform(0, 1, size=int(rng.integers(2, 5)))
    image = Image.new("RGB", (size, size), _scene_colour(rng, hues))
    draw = ImageDraw.Draw(image)
    r_min, r_max = 3.0, size / 2
    for _ in range(int(rng.integers(3000, 5000))):  # enough for the leaves to cover the picture
        u = rng.random()
        radius = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5  # inverse CDF of p(r) ∝ r⁻³
        x, y = rng.uniform(-radius, size + radius, size=2)
        aspect = rng.uniform(0.4, 1.0)
        box = (x - radius, y - radius * aspect, x + radius, y + radius * aspect)
        colour = _scene_colour(rng, hues)
        if rng.random() < 0.7:
            draw.ellipse(box, fill=colour)
        else:
            angle = rng.uniform(0, np.pi)
            corners = [(x + radius * np.cos(angle + a), y + radius * aspect * np.sin(angle + a))
                       for a in (0.0, np.pi / 2, np.pi, 3 * np.pi / 2)]
            draw.polygon(corners, fill=colour)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    ys, xs = np.mgrid[0:size, 0:size] / size
    light = 1.0 + rng.uniform(-0.35, 0.35) * (xs - 0.5) + rng.uniform(-0.35, 0.35) * (ys - 0.5)
    texture = 1.0 + rng.uniform(0.02, 0.12) * _fractal_noise(rng, size)
    pixels = np.clip(pixels * light[..., None] * texture[..., None], 0, 1)
    softened = Image.fromarray((pixels * 255).round().astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    return np.asarray(softened)


def _scene_colour(rng: np.random.Generator, hues: np.ndarray) -> tuple[int, int, int]:
    """A colour near one of the picture's hues, of natural (mostly moderate) saturation and value."""
    hue = (hues[int(rng.integers(len(hues)))] + rng.normal(0, 0.04)) % 1.0
    saturation = float(np.clip(rng.beta(1.5, 3), 0, 1))
    value = float(np.clip(rng.beta(2.5, 2), 0.03, 1))
    rgb = matplotlib.colors.hsv_to_rgb((hue, saturation, value))
    return tuple(int(round(c * 255)) for c in rgb)


def _fractal_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Zero-mean noise with a 1/f amplitude spectrum, scaled to unit standard deviation."""
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size)
    phase = rng.uniform(0, 2 * np.pi, size=(size, size))
    noise = np.real(np.fft.ifft2(amplitude * np.exp(1j * phase)))
    return (noise - noise.mean()) / (noise.std() + 1e-12)


def _sentence(rng: np.random.Generator, n_words: int) -> str:
    """Random words from a small vocabulary, capitalised like a sentence."""
    words = [_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=n_words)]
    return " ".join(words).capitalize()


def _text_block(draw, rng, box, family: str, size: int, colour) -> None:
    """Fill `box` with lines of text at one font size."""
    x0, y0, x1, y1 = box
    font = _font(family, size)
    y = y0
    while y + size < y1:
        line = _sentence(rng, int(rng.integers(3, 12)))
        while line and draw.textlength(line, font=font) > x1 - x0:
            line = line[:-1]
        draw.text((x0, y), line, fill=colour, font=font)
        y += int(size * rng.uniform(1.2, 1.7))


def _document(draw, rng, size, palette) -> None:
    """A page of prose with a heading, in a serif or sans font of random size."""
    bg, fg, accent = palette
    margin = int(rng.integers(10, 40))
    heading = int(rng.integers(18, 36))
    draw.text((margin, margin), _sentence(rng, 4), fill=accent, font=_font("sans_bold", heading))
    family = "serif" if rng.random() < 0.5 else "sans"
    _text_block(draw, rng, (margin, margin + heading * 2, size - margin, size - margin),
                family, int(rng.integers(8, 18)), fg)


def _code(draw, rng, size, palette) -> None:
    """An editor pane: line numbers and coloured monospace tokens."""
    bg, fg, accent = palette
    font_size = int(rng.integers(9, 16))
    font = _font("mono", font_size)
    colours = (fg, accent, (200, 120, 200), (120, 180, 230))
    y, line_no = 4, 1
    while y + font_size < size:
        draw.text((4, y), f"{line_no:3d}", fill=(128, 128, 128), font=font)
        x = 4 + 4 * font_size + int(rng.integers(0, 4)) * 2 * font_size
        for _ in range(int(rng.integers(2, 9))):
            token = _CODE_TOKENS[int(rng.integers(len(_CODE_TOKENS)))]
            draw.text((x, y), token, fill=colours[int(rng.integers(len(colours)))], font=font)
            x += draw.textlength(token + " ", font=font)
        y += int(font_size * 1.4)
        line_no += 1


def _ui(draw, rng, size, palette) -> None:
    """An application window: title bar, sidebar, buttons, input fields and icons."""
    bg, fg, accent = palette
    bar = int(rng.integers(20, 40))
    draw.rectangle((0, 0, size, bar), fill=accent)
    draw.text((8, bar // 4), _sentence(rng, 3), fill=bg, font=_font("sans_bold", bar // 2))
    side = int(rng.integers(60, 160))
    draw.rectangle((0, bar, side, size), fill=tuple(int(c * 0.85) for c in bg))
    for i in range(int(rng.integers(5, 14))):
        draw.text((8, bar + 10 + i * 24), _sentence(rng, 1), fill=fg, font=_font("sans", 12))
    for _ in range(int(rng.integers(4, 12))):
        x = int(rng.integers(side + 10, size - 90))
        y = int(rng.integers(bar + 10, size - 40))
        w, h = int(rng.integers(50, 140)), int(rng.integers(20, 36))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.rounded_rectangle((x, y, x + w, y + h), radius=5, fill=colour, outline=fg)
        draw.text((x + 6, y + 4), _sentence(rng, 1), fill=fg, font=_font("sans", 11))
    for _ in range(int(rng.integers(3, 10))):
        x, y = int(rng.integers(side, size - 30)), int(rng.integers(bar, size - 30))
        draw.ellipse((x, y, x + 24, y + 24), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))


def _chart(draw, rng, size, palette) -> None:
    """A bar or line chart with axes, grid lines and tick labels."""
    bg, fg, accent = palette
    left, bottom, top, right = 50, size - 40, 30, size - 20
    draw.text((left, 6), _sentence(rng, 3), fill=fg, font=_font("sans_bold", 16))
    for i in range(6):
        y = bottom - i * (bottom - top) // 5
        draw.line((left, y, right, y), fill=tuple(int(c * 0.8 + 40) for c in bg), width=1)
        draw.text((6, y - 6), f"{i * 20}", fill=fg, font=_font("sans", 10))
    draw.line((left, top, left, bottom), fill=fg, width=2)
    draw.line((left, bottom, right, bottom), fill=fg, width=2)
    n = int(rng.integers(5, 20))
    values = rng.uniform(0.1, 1.0, size=n)
    step = (right - left) / n
    colours = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(3)]
    if rng.random() < 0.5:
        for i, v in enumerate(values):
            x = left + i * step + step * 0.15
            draw.rectangle((x, bottom - v * (bottom - top), x + step * 0.7, bottom), fill=colours[i % 3])
    else:
        for series in range(int(rng.integers(1, 4))):
            ys = np.clip(values + rng.normal(0, 0.1, size=n) * series, 0, 1)
            points = [(left + (i + 0.5) * step, bottom - y * (bottom - top)) for i, y in enumerate(ys)]
            draw.line(points, fill=colours[series], width=int(rng.integers(1, 4)))


def _webpage(draw, rng, size, palette) -> None:
    """A web-like page: navigation bar, hero banner, image blocks and columns of text."""
    bg, fg, accent = palette
    draw.rectangle((0, 0, size, 36), fill=fg)
    x = 10
    for _ in range(int(rng.integers(3, 7))):
        word = _sentence(rng, 1)
        draw.text((x, 10), word, fill=bg, font=_font("sans", 13))
        x += int(draw.textlength(word, font=_font("sans", 13))) + 20
    hero = int(rng.integers(80, 180))
    top_colour = np.array(accent, dtype=float)
    for y in range(36, 36 + hero):  # vertical gradient banner
        t = (y - 36) / hero
        draw.line((0, y, size, y), fill=tuple(int(c) for c in top_colour * (1 - t) + 255 * t))
    draw.text((20, 50), _sentence(rng, 3), fill=bg, font=_font("sans_bold", 26))
    columns = int(rng.integers(1, 4))
    width = size // columns
    for c in range(columns):
        x0 = c * width + 10
        block = int(rng.integers(40, 90))
        draw.rectangle((x0, 46 + hero, x0 + width - 20, 46 + hero + block),
                       fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        _text_block(draw, rng, (x0, 56 + hero + block, x0 + width - 20, size - 10),
                    "sans", int(rng.integers(8, 14)), fg)
