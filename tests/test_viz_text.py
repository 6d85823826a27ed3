"""Text in pictures: accented Latin drawn with real glyphs, scripts no font has warned about once,
colour-bar labels rounded and apart, eval's vis/ panels captioned with a legend."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import ImageFont

from gemseg import fonts, viz


def _needs_default_font():
    if fonts.default_font_path() is None:
        if os.environ.get("GEMSEG_REQUIRE_BACKENDS") == "1":
            pytest.fail("DejaVu Sans is not installed (scripts/setup.sh installs fonts-dejavu-core)")
        pytest.skip("DejaVu Sans is not installed (apt-get install fonts-dejavu-core)")


def test_accented_latin_has_glyphs_in_the_default_font():
    """PIL's built-in font drew "Café crème" as "Caf▯ cr▯me"."""
    _needs_default_font()
    font = viz.get_font(20)
    assert fonts.missing_glyphs(font, "Café crème, Ærøskøbing, naïve, Ελλάδα, Москва") == ""
    builtin = ImageFont.load_default(size=20)
    if not isinstance(builtin, ImageFont.FreeTypeFont):
        pytest.skip("this Pillow's built-in font is a bitmap font")
    assert fonts.missing_glyphs(builtin, "Café crème") != ""  # what the default used to be


def test_text_no_font_can_draw_warns_once(monkeypatch):
    """CJK without a CJK font used to come out as boxes with no word said."""
    _needs_default_font()
    monkeypatch.setattr(fonts, "fallback_font_paths", lambda: ())  # as on a machine without CJK fonts
    monkeypatch.setattr(fonts, "_warned", set())
    font = viz.get_font(16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            viz.legend([("猫 cat", (255, 0, 0))], font=font)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "'猫'" in messages[0] and "--font" in messages[0]


def test_text_the_font_cannot_draw_uses_an_installed_font_that_can(monkeypatch):
    _needs_default_font()
    builtin = ImageFont.load_default(size=16)
    if not isinstance(builtin, ImageFont.FreeTypeFont) or not fonts.missing_glyphs(builtin, "é"):
        pytest.skip("this Pillow's built-in font draws é (nothing to fall back from)")
    monkeypatch.setattr(fonts, "fallback_font_paths", lambda: (fonts.default_font_path(),))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback that works says nothing
        chosen = fonts.font_for_text(builtin, "Café")
    assert chosen.getname()[0] == "DejaVu Sans" and chosen.size == 16


@pytest.mark.parametrize("lo, hi", [(0.000966, 0.3), (0.12, 0.35), (-0.05, 0.05), (0.2131, 0.2133), (3.0, 41.7)])
@pytest.mark.parametrize("height", [40, 64, 120, 400])
def test_colorbar_labels_are_rounded_and_do_not_overlap(lo, hi, height):
    font = viz.get_font(viz.font_size_for(height, height))
    text_h = viz.text_box("0", font)[1]
    positions, labels = viz.colorbar_ticks(lo, hi, bar_h=height, text_h=text_h)
    ys = [p * (height - 1) for p in positions]
    assert all(b - a >= text_h for a, b in zip(ys, ys[1:]))  # each label's box clear of the next
    assert len(set(labels)) == len(labels) and len({len(t) for t in labels}) <= 2  # distinct, same decimals
    assert all(len(t.lstrip("-")) <= 8 for t in labels)  # 0.30, not 0.000966...
    step = (hi - lo) / (len(labels) - 1)
    values = np.linspace(hi, lo, len(labels))
    assert np.allclose([float(t) for t in labels], values, atol=step / 4)  # within a quarter step
    assert viz.colorbar(height, lo, hi, font=font).height >= height


def test_eval_visualization_has_captions_and_a_legend(tmp_path):
    from PIL import Image

    from gemseg.eval.visualize import save_visualization

    h, w = 48, 64
    image = np.full((h, w, 3), 90, dtype=np.uint8)
    gt = np.zeros((h, w), dtype=np.uint8)
    gt[:, 32:] = 2
    gt[0, :] = 255
    pred = np.ones((h, w), dtype=np.uint8)
    palette = [(0, 0, 0), (200, 30, 30), (30, 200, 30)]
    save_visualization(tmp_path / "v.png", image, gt, pred, palette, class_names=["background", "cat", "dog"])
    vis = np.asarray(Image.open(tmp_path / "v.png").convert("RGB"))
    assert vis.shape[0] > h  # a caption row above the panels
    assert vis.shape[1] > 3 * w + 12  # three panels and a legend beside them
    legend = vis[:, 3 * w + 12:]
    for colour in palette:  # a swatch for each class either map holds
        assert (legend == colour).all(axis=-1).sum() >= 25, colour
