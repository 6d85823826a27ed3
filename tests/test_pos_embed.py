"""Each position-embedding resampling convention equals an independent plain-loop implementation of its
formula, and the convention is a model setting that changes nothing else."""
import math

import pytest
import torch

from gemseg.backbones.base import POS_EMBED_MODES, resample_pos_embed
from gemseg.model import GEMModel

from conftest import tiny_open_clip_backbone


def _cubic(x: float, a: float) -> float:
    x = abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _weights_bicubic(n_in: int, n_out: int, ratio: float) -> list[list[tuple[int, float]]]:
    """Plain bicubic (a = -0.75, half-pixel centres, border indices clamped): ``src = ratio * (i + 0.5) - 0.5``."""
    rows = []
    for i in range(n_out):
        real = ratio * (i + 0.5) - 0.5
        base = math.floor(real)
        t = real - base
        taps = [(base - 1, _cubic(t + 1, -0.75)), (base, _cubic(t, -0.75)), (base + 1, _cubic(1 - t, -0.75)),
                (base + 2, _cubic(2 - t, -0.75))]
        rows.append([(min(max(j, 0), n_in - 1), w) for j, w in taps])
    return rows


def _weights_bicubic_aa(n_in: int, n_out: int) -> list[list[tuple[int, float]]]:
    """Antialiased bicubic as PIL defines it (a = -0.5, the kernel stretched by the downscale, weights
    normalized to sum 1)."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 2 * stretch
    rows = []
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        taps = [(j, _cubic((j - centre + 0.5) / stretch, -0.5)) for j in range(lo, hi)]
        total = sum(w for _, w in taps)
        rows.append([(j, w / total) for j, w in taps])
    return rows


def _weights_bilinear(n_in: int, n_out: int) -> list[list[tuple[int, float]]]:
    """Plain bilinear, half-pixel centres, source positions below 0 clamped to 0."""
    rows = []
    for i in range(n_out):
        real = max(n_in / n_out * (i + 0.5) - 0.5, 0.0)
        j0 = int(real)
        j1 = min(j0 + 1, n_in - 1)
        t = real - j0
        rows.append([(j0, 1 - t), (j1, t)])
    return rows


def _separable(grid: torch.Tensor, rows_h, rows_w) -> torch.Tensor:
    """``grid`` [gh, gw, C] -> [h, w, C] with per-axis tap lists, one output value at a time."""
    C = grid.shape[-1]
    out = torch.zeros(len(rows_h), len(rows_w), C, dtype=torch.float64)
    for y, taps_y in enumerate(rows_h):
        for x, taps_x in enumerate(rows_w):
            for jy, wy in taps_y:
                for jx, wx in taps_x:
                    out[y, x] += wy * wx * grid[jy, jx].double()
    return out


def _plain(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int], mode: str) -> torch.Tensor:
    grid = pos[1:].reshape(*old, -1)
    if mode == "bicubic-scale":  # the official formula: scale_factor = (g + 0.1) / g0, so ratio = g0 / (g + 0.1)
        rows = [_weights_bicubic(o, n, o / (n + 0.1)) for o, n in zip(old, new)]
    elif mode == "bicubic":  # MaskCLIP: plain bicubic to the target size, so ratio = g0 / g
        rows = [_weights_bicubic(o, n, o / n) for o, n in zip(old, new)]
    elif mode == "bicubic-aa":
        rows = [_weights_bicubic_aa(o, n) for o, n in zip(old, new)]
    else:
        rows = [_weights_bilinear(o, n) for o, n in zip(old, new)]
    out = _separable(grid, *rows).reshape(-1, grid.shape[-1])
    return torch.cat([pos[:1].double(), out]).float()


@pytest.mark.parametrize("mode", POS_EMBED_MODES)
@pytest.mark.parametrize("new", [(10, 13), (5, 4), (14, 9)])
def test_each_convention_matches_its_plain_formula(mode, new):
    torch.manual_seed(0)
    pos = torch.randn(1 + 7 * 7, 3)
    got = resample_pos_embed(pos, old_grid=(7, 7), new_grid=new, mode=mode)
    assert got.shape == (1 + new[0] * new[1], 3)
    torch.testing.assert_close(got, _plain(pos, (7, 7), new, mode), atol=1e-5, rtol=1e-5)
    assert torch.equal(got[0], pos[0])  # the class token's embedding is kept


def test_conventions_differ_off_the_trained_grid_and_agree_on_it():
    torch.manual_seed(1)
    pos = torch.randn(1 + 49, 4)
    out = {m: resample_pos_embed(pos, old_grid=(7, 7), new_grid=(10, 13), mode=m) for m in POS_EMBED_MODES}
    for a in POS_EMBED_MODES:
        for b in POS_EMBED_MODES:
            if a < b:
                assert (out[a] - out[b]).abs().max() > 1e-3, (a, b)
    # the scale-factor convention is not plain size-based bicubic either
    size_based = _plain(pos, (7, 7), (10, 13), "bicubic-scale")
    assert torch.allclose(out["bicubic-scale"], size_based, atol=1e-5)
    ratio_rows = [_weights_bicubic(7, n, 7 / n) for n in (10, 13)]
    by_size = torch.cat([pos[:1].double(), _separable(pos[1:].reshape(7, 7, -1), *ratio_rows).reshape(-1, 4)])
    assert (out["bicubic-scale"].double() - by_size).abs().max() > 1e-3
    # ... while MaskCLIP's "bicubic" is exactly that size-based formula (float32 vs float64 sums: 1e-5)
    assert torch.allclose(out["bicubic"].double(), by_size, atol=1e-5)
    for m in POS_EMBED_MODES:
        assert resample_pos_embed(pos, old_grid=(7, 7), new_grid=(7, 7), mode=m) is pos
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        resample_pos_embed(pos, old_grid=(7, 7), new_grid=(8, 8), mode="nearest")


def test_the_model_setting_selects_the_convention_and_shares_weights():
    backbone = tiny_open_clip_backbone()  # 32 px, patch 8: trained grid 4x4
    model = GEMModel(backbone, method="clip")
    assert model.pos_embed == "bicubic-aa"
    torch.manual_seed(2)
    native, other = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 48, 40)  # grids 4x4 and 6x5
    feats = {m: model.with_pos_embed(m).encode_image(other) for m in POS_EMBED_MODES}
    assert all(model.with_pos_embed(m).backbone is backbone for m in POS_EMBED_MODES)
    assert (feats["bicubic-aa"] - feats["bicubic-scale"]).abs().max() > 1e-4
    assert (feats["bilinear"] - feats["bicubic-scale"]).abs().max() > 1e-4
    assert (feats["bicubic"] - feats["bicubic-aa"]).abs().max() > 1e-4
    for m in POS_EMBED_MODES:  # on the trained grid nothing is resampled
        torch.testing.assert_close(model.with_pos_embed(m).encode_image(native), model.encode_image(native))
    assert backbone.pos_embed_mode == "bicubic-aa"  # the mode is set only during a call
    # the model's tokens use exactly the resampled embeddings: compare with embed under each mode
    pos, grid = backbone._pos_embed()
    with backbone.resampling("bilinear"):
        tokens = backbone.embed(other)
    with torch.no_grad():
        patches = backbone._patch_embed(other).flatten(2).transpose(1, 2)
        cls = backbone._class_token().expand(1, 1, -1)
        manual = backbone._pre_norm(torch.cat([cls, patches], 1) + _plain(pos.detach(), grid, (6, 5), "bilinear"))
    torch.testing.assert_close(tokens, manual, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        GEMModel(backbone, pos_embed="nearest")
    assert model.with_config(depth=3).with_pos_embed("bilinear").with_config(depth=4).pos_embed == "bilinear"


def test_create_model_takes_the_convention(tiny_model_files):
    from gemseg import create_model

    config, checkpoint = tiny_model_files["open_clip"]
    model = create_model(config, checkpoint=checkpoint, depth=3, pos_embed="bicubic-scale")
    assert model.pos_embed == "bicubic-scale"


def test_the_eval_applies_the_protocols_convention():
    import numpy as np

    from gemseg import Segmenter
    from gemseg.eval import load_dataset_spec, resolve_protocol

    model = GEMModel(tiny_open_clip_backbone(), method="clip")  # bicubic-aa
    spec = load_dataset_spec("voc20")
    image = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)  # a 5x6 grid
    scores = {}
    for mode in POS_EMBED_MODES:
        protocol, _ = resolve_protocol("gem", spec, resize="none", pos_embed=mode)
        seg = Segmenter.from_dataset(model, spec, protocol)
        assert seg.model.pos_embed == mode and seg.model.backbone is model.backbone
        scores[mode] = seg.scores(image, out_size=(40, 48))[0]
        expected = model.variant(pos_embed=mode).heatmaps(seg.prepare(image), seg.text)[0]
        torch.testing.assert_close(scores[mode], expected.float())
    assert (scores["bicubic-aa"] - scores["bicubic-scale"]).abs().max() > 1e-5
    assert model.pos_embed == "bicubic-aa"  # the caller's model is not changed
