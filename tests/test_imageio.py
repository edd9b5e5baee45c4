"""Every odd image becomes float RGB in [0, 1]; every bad file is a readable ImageLoadError."""

import cv2
import numpy as np
import pytest

from backends.imageio import ImageLoadError, load_image, normalize_array


def write(path, array, ext=".png", params=()):
    ok, buf = cv2.imencode(ext, array, list(params))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_grey_becomes_three_equal_channels(tmp_path):
    img = load_image(write(tmp_path / "g.png", np.full((5, 7), 128, np.uint8)))
    assert img.pixels.shape == (5, 7, 3) and img.pixels.dtype == np.float32
    np.testing.assert_allclose(img.pixels, 128 / 255, atol=1e-6)


def test_sixteen_bit_keeps_its_full_range(tmp_path):
    arr = np.zeros((4, 4, 3), np.uint16)
    arr[..., 2] = 65535  # BGR: red
    arr[0, 0] = 32768
    img = load_image(write(tmp_path / "deep.png", arr))
    np.testing.assert_allclose(img.pixels[1, 1], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(img.pixels[0, 0], 32768 / 65535, atol=1e-6)


def test_rgba_is_composited_on_white(tmp_path):
    bgra = np.zeros((3, 3, 4), np.uint8)
    bgra[..., 0] = 255  # blue
    bgra[0, 0, 3] = 255  # opaque
    bgra[1, 1, 3] = 0  # transparent
    img = load_image(write(tmp_path / "a.png", bgra))
    np.testing.assert_allclose(img.pixels[0, 0], [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(img.pixels[1, 1], [1, 1, 1], atol=1e-6)


def test_palette_png_is_expanded(tmp_path):
    # A minimal 2x1 palette PNG (colour type 3): red and green entries.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 3, 0, 0, 0))
    png += chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0]))
    png += chunk(b"IDAT", zlib.compress(bytes([0, 0, 1])))
    png += chunk(b"IEND", b"")
    path = tmp_path / "pal.png"
    path.write_bytes(png)
    img = load_image(path)
    np.testing.assert_allclose(img.pixels[0], [[1, 0, 0], [0, 1, 0]], atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    # A 2x1 JPEG (wide) tagged orientation 6 (rotate 90 degrees clockwise) must load tall.
    wide = np.zeros((8, 16, 3), np.uint8)
    wide[:, :8] = 255
    ok, buf = cv2.imencode(".jpg", wide)
    data = bytearray(buf.tobytes())
    exif = (b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01"
            + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\x00\x00\x00\x00")
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    path = tmp_path / "rot.jpg"
    path.write_bytes(bytes(data[:2]) + app1 + bytes(data[2:]))
    img = load_image(path)
    assert img.pixels.shape[:2] == (16, 8)


def test_huge_images_are_downscaled_with_a_notice(tmp_path):
    img = load_image(write(tmp_path / "big.png", np.zeros((300, 1000, 3), np.uint8)), max_side=256)
    assert img.pixels.shape[:2] == (77, 256)
    assert img.original_size == (1000, 300)
    assert "downscaled" in img.notice


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not an image"),
    ],
)
def test_bad_files_raise_readable_errors(tmp_path, content, fragment):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=fragment):
        load_image(path)


def test_truncated_png_is_refused(tmp_path):
    good = write(tmp_path / "t.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError):
        load_image(good)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_zero_size_arrays_are_refused():
    with pytest.raises(ImageLoadError, match="no pixels"):
        normalize_array(np.zeros((0, 5, 3), np.uint8))


def test_float_arrays_out_of_range_are_rescaled():
    img = normalize_array(np.array([[[0.0, 2.0, 4.0]]], np.float32))
    assert img.pixels.min() >= 0 and img.pixels.max() <= 1


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tiff"])
def test_the_declared_size_is_read_from_the_header_of_every_format(ext):
    import cv2

    from backends.image_header import declared_size

    ok, buf = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert ok
    assert declared_size(buf.tobytes()) == (53, 37)


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A small PNG whose header declares 32000 x 32000 grey pixels (1 GB decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 32000, 32000, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (32001 * 64))  # the first 64 rows; the rest would be more of the same
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    with pytest.raises(ImageLoadError, match=r"declares 32000x32000 pixels \(1024 MP\); the limit is 100 MP"):
        load_image(bomb)


def test_a_large_image_is_decoded_reduced_and_still_reports_its_full_size(tmp_path):
    big = np.zeros((600, 2000, 3), np.uint8)
    big[:, 1000:] = 255  # right half white
    img = load_image(write(tmp_path / "wide.png", big), max_side=256)
    assert img.original_size == (2000, 600) and img.pixels.shape[:2] == (77, 256)
    assert img.pixels[:, :120].max() == 0 and img.pixels[:, 136:].min() > 0.9999
    assert "2000x600" in img.notice


def test_a_file_name_too_long_for_the_file_system_gives_a_message(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot be opened|no such file") as info:
        load_image(tmp_path / ("x" * 300 + ".png"))
    assert len(str(info.value)) < 200


def _with_orientation(png: bytes, orientation: int) -> bytes:
    """A PNG with an eXIf chunk saying ``orientation``, after its IHDR chunk."""
    import struct
    import zlib

    tiff = (b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01"
            + struct.pack(">H", orientation) + b"\x00\x00" + b"\x00\x00\x00\x00")
    body = b"eXIf" + tiff
    return png[:33] + struct.pack(">I", len(tiff)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF) + png[33:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_images_with_alpha_too(tmp_path, orientation):
    """An RGBA PNG loads turned as OpenCV turns its colour for that EXIF orientation, its alpha
    turned the same way (the reference: the alpha alone, as a grey PNG with the same tag)."""
    rng = np.random.default_rng(orientation)
    bgr = cv2.resize((rng.random((3, 5, 3)) * 255).astype(np.uint8), (20, 12), interpolation=cv2.INTER_NEAREST)
    alpha = np.full((12, 20), 255, np.uint8)
    alpha[0, 17:] = 0  # a transparent run near the top-right corner
    png = cv2.imencode(".png", np.dstack([bgr, alpha]))[1].tobytes()
    path = tmp_path / "rgba.png"
    path.write_bytes(_with_orientation(png, orientation))
    colour = cv2.imdecode(np.frombuffer(_with_orientation(png, orientation), np.uint8), cv2.IMREAD_COLOR)
    a_png = _with_orientation(cv2.imencode(".png", alpha)[1].tobytes(), orientation)
    a_ref = cv2.imdecode(np.frombuffer(a_png, np.uint8), cv2.IMREAD_GRAYSCALE)[..., None] / 255.0
    expected = colour[..., ::-1] / 255.0 * a_ref + (1 - a_ref)
    np.testing.assert_allclose(load_image(path).pixels, expected, atol=1e-6)
