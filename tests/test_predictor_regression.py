"""The one-predictor redesign (issue 17) changes no output: ``GEMModel.segment``, ``gemseg segment``, the demo,
``gemseg eval`` and the sweep give on the tiny models what the code before it gave.

The reference arrays were produced by the OLD code (commit 51dbb1c) with ``tests/predictor_cases.py``
(see its docstring); this test runs the same cases with the current code."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import HAS_OPEN_CLIP, HAS_TRANSFORMERS

pytestmark = [pytest.mark.skipif(not (HAS_OPEN_CLIP and HAS_TRANSFORMERS), reason="needs open_clip and transformers"),
              pytest.mark.filterwarnings("ignore")]

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "predictor_reference.npz")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    import predictor_cases

    return predictor_cases.compute_all(str(tmp_path_factory.mktemp("predictor")))


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def test_every_recorded_output_is_produced(outputs, reference):
    assert set(outputs) == set(reference)
    assert len(reference) > 80


def _labels_agree(got, want, key):
    # labels are argmaxes and threshold tests of float scores: another thread count may move a pixel
    # sitting on a tie; at most 0.5% of a map's pixels may differ (none did in practice)
    assert got.shape == want.shape, key
    assert (got != want).mean() <= 0.005, key


@pytest.mark.parametrize("caller", ["library", "cli", "demo", "eval", "sweep"])
def test_outputs_unchanged(outputs, reference, caller):
    keys = sorted(k for k in reference if k.startswith(caller + "/"))
    assert keys
    for key in keys:
        got, want = outputs[key], reference[key]
        kind = key.rsplit("/", 1)[-1]
        if want.dtype.kind in "US":
            assert got.tolist() == want.tolist(), key
        elif key.startswith("eval/") and "/pred/" in key or kind == "labels":
            _labels_agree(got, want, key)
        elif kind == "counts":  # pixel and point counts of each class: the label maps summed
            assert got.shape == want.shape and np.abs(got - want).sum() <= 0.005 * max(1, want.sum()), key
        else:
            # float32 scores, probabilities and statistics: the same operations, possibly in another
            # order or thread split; 1e-5 absolute is far below any change of method (which moves them
            # by 1e-2 or more), far above float32 reassociation noise (about 1e-7)
            assert got.shape == want.shape, key
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, equal_nan=True, err_msg=key)


def test_the_cases_are_not_trivial(reference):
    """The recorded cases exercise what they claim: thresholds move pixels to background, several labels occur."""
    auto = reference["library/open_clip/auto/labels"]
    none = reference["library/open_clip/none/labels"]
    assert (none > 0).all() and len(np.unique(none)) > 1
    assert (auto == 0).any()
    assert np.isnan(reference["library/open_clip/none_thr/confidence"]).any()  # threshold without background prompts
    assert len(np.unique(reference["sweep/miou"])) > 3
    assert any(len(np.unique(reference[k])) > 1 for k in reference if k.startswith("eval/naclip/pred/"))
