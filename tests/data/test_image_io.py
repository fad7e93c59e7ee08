import io

import numpy as np
import pytest
from PIL import Image

from lightning_cv.data.image_io import BadImageError, check_image, load_image
from tests.data.helpers import write_image


def rgb(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int32)


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., 0] = 200  # red
    pixels[..., 3] = 64  # mostly transparent
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    out = rgb(load_image(tmp_path / "a.png"))
    alpha = 64 / 255
    expected = np.round(np.array([200, 0, 0]) * alpha + 255 * (1 - alpha))
    assert np.abs(out[0, 0] - expected).max() <= 1  # dropping alpha would give (200, 0, 0)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    image.info["transparency"] = 0
    image.putpixel((0, 0), 0)
    image.save(tmp_path / "p.png", transparency=0)
    out = rgb(load_image(tmp_path / "p.png"))
    assert tuple(out[0, 0]) == (255, 255, 255)  # transparent -> background, not black
    assert tuple(out[1, 1]) == (10, 200, 30)


def test_16bit_greyscale_keeps_its_range(tmp_path):
    ramp = np.linspace(0, 65535, 16, dtype=np.uint16).reshape(4, 4)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    out = rgb(load_image(tmp_path / "g16.png"))
    expected = np.round(ramp / 257).astype(np.int32)
    assert np.abs(out[..., 0] - expected).max() <= 1
    assert len(np.unique(out[..., 0])) == 16  # clipping would leave 2 grey levels


def test_greyscale_and_cmyk(tmp_path):
    Image.fromarray(np.full((4, 4), 77, dtype=np.uint8), "L").save(tmp_path / "l.png")
    assert tuple(rgb(load_image(tmp_path / "l.png"))[0, 0]) == (77, 77, 77)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    red = rgb(load_image(tmp_path / "c.jpg"))[4, 4]
    assert red[0] > 200 and red[1] < 50 and red[2] < 50


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)  # 20 wide, 10 high, left half white
    pixels[:, :10] = 255
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = rgb(load_image(tmp_path / "r.jpg"))
    assert out.shape == (20, 10, 3)
    assert out[2, 5].mean() > 200 and out[17, 5].mean() < 50  # the white half is now on top


def test_large_jpeg_is_drafted_but_keeps_enough_pixels(tmp_path):
    write_image(tmp_path / "big.jpg", seed=1, size=800)
    image = load_image(tmp_path / "big.jpg", min_size=150)
    assert 150 <= min(image.size) < 800


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("not an image at all"), "not a readable image"),
    ],
)
def test_bad_files_are_named(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(BadImageError, match=reason):
        check_image(path)


def truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * 0.7)])


def test_truncated_jpeg_passes_the_header_but_not_decoding(tmp_path):
    path = tmp_path / "t.jpg"
    truncated_jpeg(path)
    check_image(path)  # the header is fine, as with Image.verify()
    with pytest.raises(BadImageError, match="cannot be decoded"):
        check_image(path, decode=True)


def test_decompression_bomb_is_refused_not_crashing(tmp_path):
    Image.new("L", (300, 300)).save(tmp_path / "bomb.png")
    with pytest.raises(BadImageError, match=r"too large to decode safely \(300x300 pixels > 10000"):
        load_image(tmp_path / "bomb.png", max_pixels=10_000)
    Image.MAX_IMAGE_PIXELS, old = 1000, Image.MAX_IMAGE_PIXELS  # PIL raises DecompressionBombError, not OSError
    try:
        with pytest.raises(BadImageError, match="too large to decode safely"):
            load_image(tmp_path / "bomb.png")
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_missing_file_is_a_bad_image(tmp_path):
    with pytest.raises(BadImageError, match="missing or unreadable file"):
        check_image(tmp_path / "nope.png")


def test_32bit_integer_image_with_8bit_values(tmp_path):
    Image.fromarray(np.full((4, 4), 200, dtype=np.int32), "I").save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    assert tuple(rgb(load_image(tmp_path / "i32.tif"))[0, 0]) == (200, 200, 200)
