"""Rendering with numpy and PIL (gemseg.viz)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont

from gemseg import viz


def test_jet_endpoints_and_middle():
    table = viz.colormap_table("jet")
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert tuple(table[0]) == (0, 0, 128)  # dark blue
    assert tuple(table[-1]) == (128, 0, 0)  # dark red
    r, g, b = table[128].astype(int)
    assert g > 240 and abs(r - b) < 10  # green in the middle


def test_heat_is_monotonic_in_lightness():
    lightness = viz.colormap_table("heat").astype(int).sum(axis=1)
    assert np.all(np.diff(lightness) >= 0) and lightness[0] == 0 and lightness[-1] == 765


def test_unknown_colormap():
    with pytest.raises(ValueError, match="unknown colour map"):
        viz.colormap_table("viridis-ish")


def test_colorize_clips_and_handles_nan():
    out = viz.colorize(np.array([[-1.0, 0.0, np.nan, 1.0, 2.0]]), "gray")
    assert out.shape == (1, 5, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 0, 255, 255])


def test_normalize_constant_and_range():
    unit, lo, hi = viz.normalize(np.full((2, 2), 0.3))
    assert np.all(unit == 0) and lo == hi == pytest.approx(0.3)
    unit, lo, hi = viz.normalize(np.array([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(unit, [0, 0.5, 1]) and (lo, hi) == pytest.approx((0.1, 0.3))


def test_blend_and_mask():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    colors = np.full((2, 2, 3), 200, dtype=np.uint8)
    assert np.all(viz.blend(image, colors, 0.0) == 100)
    assert np.all(viz.blend(image, colors, 0.5) == 150)
    mask = np.array([[True, False], [False, False]])
    out = viz.blend(image, colors, 1.0, mask)
    assert out[0, 0, 0] == 200 and np.all(out.reshape(-1, 3)[1:] == 100)
    with pytest.raises(ValueError):
        viz.blend(image, colors, 1.5)


def test_palette_distinct_with_black_background():
    pal = viz.palette(256)
    assert tuple(pal[0]) == (0, 0, 0)
    assert len({tuple(c) for c in pal}) == 256
    # neighbouring classes differ clearly
    assert min(np.abs(pal[i].astype(int) - pal[i + 1].astype(int)).sum() for i in range(1, 30)) > 60
    with pytest.raises(ValueError):
        viz.palette(257)


def test_label_image_round_trips_through_png(tmp_path):
    labels = np.array([[0, 1, 2], [2, 1, 0]])
    colors = viz.palette(3)
    viz.label_image(labels, colors).save(tmp_path / "l.png")
    back = Image.open(tmp_path / "l.png")
    assert back.mode == "P"
    np.testing.assert_array_equal(np.array(back), labels)
    np.testing.assert_array_equal(np.asarray(back.convert("RGB")), colors[labels])
    with pytest.raises(ValueError):
        viz.label_image(np.array([[256]]), colors)


def test_colorbar_has_hot_top_and_cold_bottom():
    bar = viz.colorbar(200, -0.1, 0.3, cmap="jet", label="cosine")
    assert bar.height == 200
    arr = np.asarray(bar).astype(int)
    column = arr[:, 6]  # inside the bar
    coloured = [i for i in range(200) if column[i].max() - column[i].min() > 60]  # saturated: the bar
    assert len(coloured) > 150
    top, bottom = column[coloured[0]], column[coloured[-1]]
    assert top[0] > top[2] and bottom[2] > bottom[0]  # red on top, blue at the bottom
    text_area = arr[:, 20:]
    assert (text_area < 128).any()  # tick labels were drawn


def test_legend_rows_and_swatches():
    one = viz.legend([("cat", (255, 0, 0))])
    three = viz.legend([("cat", (255, 0, 0)), ("dog", (0, 255, 0)), ("sofa", (0, 0, 255))])
    assert three.height > one.height
    arr = np.asarray(three)
    for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255)):
        assert (arr == color).all(axis=-1).any()


def test_text_outside_latin_does_not_crash():
    entries = [("猫 кошка", (1, 2, 3))]
    assert viz.legend(entries, font=viz.get_font(14)).width > 14  # TrueType: missing glyphs become boxes
    # what PIL without FreeType (or before 10.1) has: a bitmap font that only draws Latin-1
    bitmap = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
    assert not isinstance(bitmap, ImageFont.FreeTypeFont)
    assert viz.legend(entries, font=bitmap).width > 14
    assert viz.text_box("猫", bitmap)[0] > 0


def test_fit_text_shortens():
    font = viz.get_font(12)
    long = "a very long class name " * 10
    short = viz.fit_text(long, font, 80)
    assert short.endswith("…") and viz.text_box(short, font)[0] <= 80


def test_grid_side_by_side_and_wrapping():
    im = Image.new("RGB", (60, 40), (10, 20, 30))
    row = viz.grid([("a", im), ("b", im), ("c", im)], height=40, columns=4)
    wrapped = viz.grid([("a", im), ("b", im), ("c", im)], height=40, columns=2)
    assert row.width > 3 * 60 and row.height < 2 * 40 + 60
    assert wrapped.height > row.height + 40 and wrapped.width < row.width
    five = viz.grid([(str(i), im) for i in range(5)], height=40, columns=4)  # rows of 3 and 2, not 4 and 1
    assert five.width == row.width and five.height > row.height + 40
    with pytest.raises(ValueError):
        viz.grid([])


def test_heatmap_overlay_puts_hot_colour_at_the_maximum():
    image = Image.new("RGB", (5, 4), (128, 128, 128))
    scores = np.zeros((4, 5))
    scores[1, 2] = 0.3
    over, lo, hi = viz.heatmap_overlay(image, scores, cmap="jet", alpha=1.0)
    arr = np.asarray(over)
    assert (lo, hi) == (0.0, 0.3)
    assert tuple(arr[1, 2]) == (128, 0, 0) and tuple(arr[0, 0]) == (0, 0, 128)
    with pytest.raises(ValueError, match="do not match"):
        viz.heatmap_overlay(image, np.zeros((5, 4)))
    fig = viz.heatmap_figure(image, scores, title="cat")
    assert fig.width > image.width and fig.height > image.height


def test_segmentation_overlay_leaves_background_alone():
    image = Image.new("RGB", (3, 2), (100, 100, 100))
    labels = np.array([[0, 1, 2], [0, 0, 1]])
    colors = viz.palette(3)
    arr = np.asarray(viz.segmentation_overlay(image, labels, colors, alpha=1.0))
    assert tuple(arr[0, 0]) == (100, 100, 100)
    assert tuple(arr[0, 1]) == tuple(colors[1]) and tuple(arr[0, 2]) == tuple(colors[2])
    fig = viz.segmentation_figure(image, labels, colors, [("cat", colors[1])], title="t")
    assert fig.width > 3 and fig.height > 2


def test_banner_marks_the_top_in_red():
    image = Image.new("RGB", (200, 50), (255, 255, 255))
    out = viz.banner(image, "RANDOM WEIGHTS")
    assert out.height > 50 and out.getpixel((199, 1)) == (200, 0, 0)


def test_render_clusters_places_each_colour_on_its_patch():
    import torch

    image = Image.new("RGB", (20, 12), (10, 20, 30))
    labels = torch.tensor([[0, 1, 2], [2, 1, 0]])  # 2x3 grid of 8x8 patches overhanging 12x20 (padded)
    fig = viz.render_clusters(image, labels, patch_size=8, gap=4)
    assert fig.size == (2 * 20 + 4, 12)
    colors = viz.palette(4)[1:]  # the class palette without its black background colour
    assert len({tuple(c) for c in colors}) == 3 and (colors.sum(1) > 0).all()
    arr = np.asarray(fig)
    assert (arr[:, :20] == (10, 20, 30)).all()
    for (r, c), lab in np.ndenumerate(labels.numpy()):
        y, x = min(r * 8 + 3, 11), 24 + min(c * 8 + 3, 19)
        assert tuple(arr[y, x]) == tuple(colors[lab])
    blended = np.asarray(viz.render_clusters(image, labels, patch_size=8, alpha=0.5))
    assert tuple(blended[3, 24 + 3]) == tuple(((np.array([10, 20, 30]) + colors[0].astype(int)) / 2).astype(int))
    stretched = viz.render_clusters(np.zeros((6, 9, 3), dtype=np.uint8), labels.numpy())
    assert stretched.size == (22, 6)
    own = viz.render_clusters(image, labels, patch_size=8, colors=[[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert tuple(np.asarray(own)[3, 24 + 3]) == (1, 2, 3)
    with pytest.raises(ValueError, match="does not cover"):
        viz.render_clusters(Image.new("RGB", (40, 40)), labels, patch_size=8)
