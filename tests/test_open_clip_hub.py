"""An open_clip model named ``hf-hub:org/repo`` loads from that repository (it used to be renamed
``hf-hub:org-repo``, which no hub holds). The repository is a Hugging Face cache folder the test writes; the
hub is offline."""
import json
import os

import pytest
import torch

from conftest import HAS_OPEN_CLIP, TINY_OPEN_CLIP, tiny_open_clip_model

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="needs open_clip")


def _write_hub_repo(cache, repo_id: str) -> None:
    """``cache``/models--org--repo as huggingface_hub lays it out: refs/main -> one snapshot."""
    from safetensors.torch import save_file

    revision = "0" * 40
    base = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(base, "snapshots", revision)
    os.makedirs(snapshot)
    os.makedirs(os.path.join(base, "refs"))
    with open(os.path.join(base, "refs", "main"), "w") as f:
        f.write(revision)
    with open(os.path.join(snapshot, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}, f)
    state = {k: v.contiguous() for k, v in tiny_open_clip_model(seed=3).state_dict().items()}
    save_file(state, os.path.join(snapshot, "open_clip_model.safetensors"))


def test_hf_hub_name_keeps_its_slash_and_loads_the_repository(tmp_path, monkeypatch):
    from gemseg.backbones.open_clip import create_open_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = str(tmp_path / "hub")
    _write_hub_repo(cache, "someorg/tiny-clip")
    backbone = create_open_clip("hf-hub:someorg/tiny-clip", pretrained=None, checkpoint=None,
                                device="cpu", cache_dir=cache)
    assert backbone.name == "hf-hub:someorg/tiny-clip"
    assert backbone.pretrained == "hf-hub:someorg/tiny-clip"
    expected = tiny_open_clip_model(seed=3).state_dict()
    loaded = backbone.model.state_dict()
    # the weights are the repository's, read back unchanged from the safetensors file
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
