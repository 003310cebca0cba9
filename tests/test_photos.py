"""Phone photos: EXIF orientation, colour profiles to sRGB, output formats and EXIF kept, with files made here."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import InputDataError, ParamsError
from pipeline.models import ModelSpec, build_model, save_model
from pipeline.photos import ImageTooLargeError, UnsupportedImageError, encode_image, read_photo, write_image

ORIENTATION, MAKE = 0x0112, 0x010F
runner = CliRunner()


def _phone_jpeg(path, pixels: np.ndarray, orientation: int, icc: bytes | None = None, quality: int = 95) -> None:
    """A JPEG as a phone writes it: the sensor's pixels, and EXIF saying how to turn them to display."""
    exif = Image.Exif()
    exif[ORIENTATION], exif[MAKE] = orientation, "TestPhone"
    options = {"icc_profile": icc} if icc else {}
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality, exif=exif.tobytes(), **options)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _matrix_profile(description: str, red, green, blue, gamma: float) -> bytes:
    """A minimal ICC v2 RGB display profile: colourants (D50 XYZ), white point and a gamma curve per channel."""
    def xyz(values) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in values)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = description.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    desc += b"\0" * (-len(desc) % 4)
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"rXYZ", xyz(red)), (b"gXYZ", xyz(green)),
            (b"bXYZ", xyz(blue)), (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve),
            (b"cprt", b"text\0\0\0\0" + b"none\0\0\0\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 28 + _s15(0.9642) + _s15(1.0) + _s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + table + data


# Adobe RGB (1998), adapted to D50: a wider gamut than sRGB, so its saturated green is greener.
ADOBE_LIKE = _matrix_profile("Test wide RGB", (0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609),
                             (0.1492, 0.0632, 0.7446), 2.2)


def test_a_portrait_phone_photo_is_read_upright_with_its_exif_kept(tmp_path):
    sensor = np.zeros((30, 48, 3), dtype=np.uint8)  # stored landscape, 48 wide
    sensor[:6, :, 0] = 255  # the stored top rows are red
    _phone_jpeg(tmp_path / "portrait.jpg", sensor, orientation=6)  # display: rotate 90° clockwise
    photo = read_photo(tmp_path / "portrait.jpg")
    assert photo.rgb.shape == (48, 30, 3)  # upright: portrait
    assert photo.rgb[:, -3:, 0].mean() > 200 and photo.rgb[:, :3, 0].mean() < 60  # the red top is on the right
    exif = Image.Exif()
    exif.load(photo.exif)
    assert exif[MAKE] == "TestPhone" and exif[ORIENTATION] == 1  # upright pixels: orientation reset
    for orientation, shape in ((1, (30, 48, 3)), (3, (30, 48, 3)), (8, (48, 30, 3))):
        _phone_jpeg(tmp_path / f"o{orientation}.jpg", sensor, orientation)
        assert read_photo(tmp_path / f"o{orientation}.jpg").rgb.shape == shape


@pytest.mark.parametrize("suffix, pil_format", [(".HEIC", "HEIF"), (".avif", "AVIF")])
def test_an_iphone_heic_or_an_avif_photo_is_read_upright_in_srgb_and_predicted(tmp_path, suffix, pil_format):
    sensor = np.full((30, 48, 3), 90, dtype=np.uint8)
    sensor[:6, :, 0] = 255  # the stored top rows are red
    exif = Image.Exif()
    exif[ORIENTATION], exif[MAKE] = 6, "TestPhone"
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / f"IMG_0002{suffix}"
    Image.fromarray(sensor).save(path, quality=95, exif=exif.tobytes(), icc_profile=ADOBE_LIKE)
    with Image.open(path) as im:
        assert im.format == pil_format
    photo = read_photo(path)
    assert photo.rgb.shape == (48, 30, 3)  # upright, turned once
    assert photo.rgb[:, -3:, 0].mean() > 200 and photo.rgb[:, :3, 0].mean() < 140  # the red top is on the right
    assert photo.converted_from == "Test wide RGB"
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    result = runner.invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model",
                                 str(tmp_path / "model"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "IMG_0002.png") as im:
        assert im.size == (30, 48)


def test_a_heic_whose_colours_are_declared_only_by_code_is_read_as_srgb_with_a_warning(tmp_path, caplog):
    green = np.zeros((16, 16, 3), dtype=np.uint8)
    green[..., 1] = 200
    nclx = {"transfer_characteristics": 13, "matrix_coefficients": 6, "full_range_flag": 1}  # sRGB's curve, BT.601
    Image.fromarray(green).save(tmp_path / "p3.heic", quality=100, nclx_profile={**nclx, "color_primaries": 12})
    Image.fromarray(green).save(tmp_path / "srgb.heic", quality=100, nclx_profile={**nclx, "color_primaries": 1})
    with caplog.at_level("WARNING", logger="pipeline.photos"):
        assert read_photo(tmp_path / "p3.heic").converted_from is None
        read_photo(tmp_path / "srgb.heic")
    warned = [record.getMessage() for record in caplog.records]
    assert warned == [f"{tmp_path / 'p3.heic'} declares its colours in Display P3 primaries by code, with no ICC "
                      "profile: read as sRGB, not converted"]


def test_a_colour_profile_is_converted_to_srgb(tmp_path):
    green = np.zeros((16, 16, 3), dtype=np.uint8)
    green[..., 1] = 200
    Image.fromarray(green).save(tmp_path / "wide.png", icc_profile=ADOBE_LIKE)
    srgb_bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(green).save(tmp_path / "srgb.png", icc_profile=srgb_bytes)
    Image.fromarray(green).save(tmp_path / "untagged.png")

    wide = read_photo(tmp_path / "wide.png")
    expected = ImageCms.profileToProfile(Image.fromarray(green), ImageCms.ImageCmsProfile(io.BytesIO(ADOBE_LIKE)),
                                         ImageCms.createProfile("sRGB"), outputMode="RGB")
    np.testing.assert_array_equal(wide.rgb, np.asarray(expected))
    assert wide.converted_from == "Test wide RGB"
    assert not np.array_equal(wide.rgb, green) and wide.rgb[0, 0, 0] == 0  # green of a wider gamut: clipped, no red
    for name in ("srgb.png", "untagged.png"):  # already sRGB: the pixels as they are
        photo = read_photo(tmp_path / name)
        np.testing.assert_array_equal(photo.rgb, green)
        assert photo.converted_from is None and photo.exif is None


def test_bad_photos_name_what_is_wrong(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    Image.new("RGB", (16, 16)).save(tmp_path / "icon.ico")
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    with pytest.raises(UnsupportedImageError, match="notes.txt: not a JPEG, PNG"):
        read_photo(tmp_path / "notes.txt")
    with pytest.raises(UnsupportedImageError, match="icon.ico is in ICO format"):
        read_photo(tmp_path / "icon.ico")
    with pytest.raises(ImageTooLargeError, match="40x30 = 1,200 pixels, over the limit of 1,000"):
        read_photo(tmp_path / "big.png", max_pixels=1000)
    with pytest.raises(InputDataError, match="image not found"):
        read_photo(tmp_path / "missing.jpg")
    with pytest.raises(ParamsError, match="format 'gif': choose one of png, jpg, webp"):
        encode_image(np.zeros((4, 4, 3), np.uint8), "gif")


def test_output_formats_and_quality(tmp_path, rng):
    image = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 48, 0).repeat(3, 2)
    for fmt, pil in (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")):
        write_image(tmp_path / f"out.{fmt}", image, fmt, quality=90)
        with Image.open(tmp_path / f"out.{fmt}") as im:
            assert im.format == pil and im.size == (64, 48)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), image)  # lossless
    noise = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert len(encode_image(noise, "jpg", 30)) < len(encode_image(noise, "jpg", 95))


def test_predict_writes_phone_photos_upright_as_jpeg_keeping_exif_only_when_asked(tmp_path):
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    sensor = np.full((30, 48, 3), 90, dtype=np.uint8)
    (tmp_path / "in").mkdir()
    _phone_jpeg(tmp_path / "in" / "IMG_0001.jpg", sensor, 6, ADOBE_LIKE)
    base = ["predict", str(tmp_path / "in"), "--model", str(tmp_path / "model"), "--device", "cpu"]
    kept = runner.invoke(app, [*base, "-o", str(tmp_path / "kept"), "--format", "jpg", "--quality", "85",
                               "--keep-metadata"])
    plain = runner.invoke(app, [*base, "-o", str(tmp_path / "plain"), "--format", "webp", "--json"])
    assert kept.exit_code == 0 and plain.exit_code == 0, kept.output + plain.output
    with Image.open(tmp_path / "kept" / "IMG_0001.jpg") as im:
        assert im.format == "JPEG" and im.size == (30, 48)  # upright
        assert im.getexif()[MAKE] == "TestPhone" and im.getexif()[ORIENTATION] == 1
    with Image.open(tmp_path / "plain" / "IMG_0001.webp") as im:
        assert im.format == "WEBP" and im.size == (30, 48) and not im.getexif()
    bad = runner.invoke(app, [*base, "-o", str(tmp_path / "bad"), "--format", "gif"])
    assert bad.exit_code == 2 and "'gif' is not one of 'png', 'jpg', 'jpeg', 'webp'" in bad.output
