"""Robust image loading and file discovery (gemseg.io)."""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gemseg.io import DEFAULT_MAX_PIXELS, ImageLoadError, find_images, load_image


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` and which holds no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _rgb(h=6, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- conversions ----------------------------------------------------------------------------------
def test_rgb_png_is_unchanged(tmp_path):
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    got = load_image(tmp_path / "a.png")
    assert got.image.mode == "RGB" and got.original_mode == "RGB" and got.notes == []
    np.testing.assert_array_equal(np.asarray(got.image), arr)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _rgb()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    arr = np.asarray(load_image(tmp_path / "g.png").image)
    assert arr.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(arr[..., c], gray)


def test_16_bit_is_scaled_not_stretched(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257 * 10]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    got = load_image(tmp_path / "g16.png")
    assert got.original_mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(got.image)[0, :, 0], [0, 100, 255, 10])
    assert any("16 bits" in n for n in got.notes)


def test_32_bit_integers_out_of_16_bit_range_are_stretched(tmp_path):
    values = np.array([[-1000, 0, 1000]], dtype=np.int32)
    Image.frombytes("I", (3, 1), values.tobytes()).save(tmp_path / "i32.tif")
    got = load_image(tmp_path / "i32.tif")
    np.testing.assert_array_equal(np.asarray(got.image)[0, :, 0], [0, 128, 255])


def test_float_image_is_stretched(tmp_path):
    Image.fromarray(np.array([[0.5, 1.0, 1.5]], dtype=np.float32)).save(tmp_path / "f.tif")
    got = load_image(tmp_path / "f.tif")
    assert got.original_mode == "F"
    np.testing.assert_array_equal(np.asarray(got.image)[0, :, 0], [0, 128, 255])


def test_palette_image_keeps_its_colours(tmp_path):
    arr = np.zeros((2, 2, 3), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    arr[1, 1] = (0, 0, 255)
    Image.fromarray(arr).convert("P", palette=Image.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    got = load_image(tmp_path / "p.png")
    assert got.original_mode == "P"
    np.testing.assert_array_equal(np.asarray(got.image), arr)


def test_palette_transparency_is_composited_on_white(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "pt.png", transparency=1)
    arr = np.asarray(load_image(tmp_path / "pt.png").image)
    assert tuple(arr[0, 0]) == (255, 0, 0)
    assert tuple(arr[0, 1]) == (255, 255, 255)


@pytest.mark.parametrize("background, expected", [((255, 255, 255), (255, 255, 255)), ((0, 0, 0), (0, 0, 0)),
                                                  (None, (10, 20, 30))])
def test_rgba_is_composited_or_dropped(tmp_path, background, expected):
    arr = np.zeros((1, 2, 4), dtype=np.uint8)
    arr[0, 0] = (200, 100, 50, 255)  # opaque
    arr[0, 1] = (10, 20, 30, 0)  # fully transparent
    Image.fromarray(arr).save(tmp_path / "a.png")
    got = np.asarray(load_image(tmp_path / "a.png", alpha_background=background).image)
    assert tuple(got[0, 0]) == (200, 100, 50)
    assert tuple(got[0, 1]) == expected


def test_la_half_transparent_blends(tmp_path):
    arr = np.array([[[0, 128]]], dtype=np.uint8)  # black at half opacity
    Image.frombytes("LA", (1, 1), arr.tobytes()).save(tmp_path / "la.png")
    got = np.asarray(load_image(tmp_path / "la.png").image)
    assert 120 <= got[0, 0, 0] <= 135


def test_cmyk_becomes_rgb(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)  # red in CMYK
    got = load_image(tmp_path / "c.jpg")
    assert got.original_mode == "CMYK" and got.image.mode == "RGB"
    r, g, b = np.asarray(got.image)[2, 2].astype(int)
    assert r > 200 and g < 60 and b < 60
    assert any("CMYK" in n for n in got.notes)


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((4, 6, 3), dtype=np.uint8)  # 6 wide, 4 high
    arr[0, 0] = (255, 255, 255)  # a white top-left corner
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "e.png", exif=exif)
    got = load_image(tmp_path / "e.png")
    assert got.exif_transposed and got.original_size == (6, 4) and got.size == (4, 6)
    out = np.asarray(got.image)
    assert tuple(out[0, -1]) == (255, 255, 255)  # the stored top-left shows at the top right
    assert out.sum() == 255 * 3


def test_first_frame_of_an_animation(tmp_path):
    frames = [Image.new("RGB", (3, 3), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r, g, b = np.asarray(load_image(tmp_path / "anim.gif").image)[1, 1]
    assert r > 200 and b < 50


# --- bad files ------------------------------------------------------------------------------------
def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty file"):
        load_image(tmp_path / "e.png")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(tmp_path / "notes.jpg")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot read"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(tmp_path / "t.jpg")


@pytest.mark.parametrize("name, data", [("z.png", _png_header(0, 10)), ("z.ppm", b"P6\n7 0\n255\n")])
def test_zero_sized(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageLoadError, match="zero-sized"):
        load_image(tmp_path / name)


def test_corrupt_header_of_a_known_format(tmp_path):
    (tmp_path / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.raises(ImageLoadError, match="looks like a PNG"):
        load_image(tmp_path / "c.png")


def test_pixel_limit_refuses_from_the_header(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_header(30000, 30000))  # 900 MP claimed, no data
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match=r"900\.0 megapixels is over the limit of 100 megapixels"):
        load_image(tmp_path / "bomb.png")
    assert DEFAULT_MAX_PIXELS == 100_000_000
    # without our guard, PIL's own bomb limit is lifted and decoding is tried (the file has no data)
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(tmp_path / "bomb.png", max_pixels=None)
    assert Image.MAX_IMAGE_PIXELS == before  # PIL's global setting is restored


def test_pixel_limit_is_configurable(tmp_path):
    Image.fromarray(_rgb(10, 10)).save(tmp_path / "a.png")
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(tmp_path / "a.png", max_pixels=99)
    assert load_image(tmp_path / "a.png", max_pixels=100).size == (10, 10)


# --- bytes and file objects (uploads) ---------------------------------------------------------------
def test_bytes_and_file_objects_load_like_the_file(tmp_path):
    arr = np.zeros((4, 6, 3), dtype=np.uint8)
    arr[0, 0] = (255, 255, 255)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "e.png", exif=exif)
    data = (tmp_path / "e.png").read_bytes()
    want = load_image(tmp_path / "e.png")
    for source in (data, bytearray(data), io.BytesIO(data)):
        got = load_image(source)
        assert got.exif_transposed and got.size == want.size == (4, 6)
        np.testing.assert_array_equal(np.asarray(got.image), np.asarray(want.image))
    assert load_image(data).path == "<bytes>" and load_image(data, name="upload").path == "upload"
    with open(tmp_path / "e.png", "rb") as f:
        assert load_image(f).path == str(tmp_path / "e.png")


def test_bytes_get_the_same_guards():
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, "JPEG")
    with pytest.raises(ImageLoadError, match="^upload: corrupt or truncated"):
        load_image(buf.getvalue()[: len(buf.getvalue()) // 2], name="upload")
    with pytest.raises(ImageLoadError, match="^<bytes>: empty file"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match="over the limit of 100 megapixels"):
        load_image(_png_header(30000, 30000))
    with pytest.raises(ImageLoadError, match="looks like a PNG"):
        load_image(io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30))
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(b"hello")
    with pytest.raises(TypeError, match="binary mode"):
        load_image(io.StringIO("hello"))
    with pytest.raises(TypeError, match="a path, bytes or a binary file object"):
        load_image(3)


# --- discovery --------------------------------------------------------------------------------------
def _touch_images(root, *names):
    for n in names:
        p = os.path.join(str(root), n)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        Image.new("RGB", (2, 2)).save(p) if n.lower().endswith((".png", ".jpg")) else open(p, "w").close()


def test_folder_is_flat_unless_recursive(tmp_path):
    _touch_images(tmp_path, "b.png", "a.jpg", "notes.txt", ".hidden.png", "sub/c.png", ".git/d.png")
    flat = find_images([str(tmp_path)])
    assert [s.key for s in flat.sources] == ["a.jpg", "b.png"]
    deep = find_images([str(tmp_path)], recursive=True)
    assert [s.key for s in deep.sources] == ["a.jpg", "b.png", "sub/c.png"]
    assert not flat.problems and not deep.problems


def test_folder_without_images_hints_recursive(tmp_path):
    _touch_images(tmp_path, "sub/c.png")
    found = find_images([str(tmp_path)])
    assert found.sources == [] and "--recursive" in found.problems[0][1]


def test_globs(tmp_path):
    _touch_images(tmp_path, "x/a.png", "x/b.jpg", "x/deep/c.png", "x/n.txt")
    assert [s.key for s in find_images([f"{tmp_path}/x/*"]).sources] == ["a.png", "b.jpg"]
    deep = find_images([f"{tmp_path}/x/**/*.png"], recursive=True)
    assert [s.key for s in deep.sources] == ["a.png", "deep/c.png"]
    none = find_images([f"{tmp_path}/x/*.gif"])
    assert none.sources == [] and "matches no image" in none.problems[0][1]


def test_explicit_files_are_kept_whatever_their_extension(tmp_path):
    _touch_images(tmp_path, "n.txt")
    found = find_images([str(tmp_path / "n.txt"), str(tmp_path / "missing.png")])
    assert [s.key for s in found.sources] == ["n.txt"]
    assert found.problems == [(str(tmp_path / "missing.png"), f"{tmp_path / 'missing.png'}: no such file or folder")]


def test_duplicates_are_processed_once(tmp_path):
    _touch_images(tmp_path, "a.png")
    found = find_images([str(tmp_path / "a.png"), str(tmp_path), str(tmp_path / "." / "a.png")])
    assert len(found.sources) == 1 and len(found.notes) == 2


def test_same_names_in_different_folders_get_distinct_keys(tmp_path):
    _touch_images(tmp_path, "a/cat.png", "b/cat.png", "c/dog.png")
    found = find_images([str(tmp_path / "a/cat.png"), str(tmp_path / "b/cat.png"), str(tmp_path / "c/dog.png")])
    assert [s.key for s in found.sources] == ["a/cat.png", "b/cat.png", "dog.png"]
