"""End-to-end evaluation on tiny synthetic datasets with a tiny model: reports, resume after an interruption
(graceful and hard), saved predictions scored again, point labels, and the CLI."""
import json
import subprocess
import sys

import pytest

import eval_data
from conftest import HAS_OPEN_CLIP
from gemseg.cli import main as cli
from gemseg.eval import compare_markdown, evaluate, load_dataset_spec, resolve_protocol
from gemseg.eval.score import score_folders
from gemseg.eval.state import StateError

pytestmark = [pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed"),
              pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")]

SMALL = dict(size=48, crop=32, stride=16, templates="single")


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return eval_data.write_voc(tmp_path_factory.mktemp("voc") / "VOC2012", n=5)


def _run(model, voc, out, **kw):
    spec = load_dataset_spec("voc21")
    protocol, source = resolve_protocol("sclip", spec, **SMALL)
    return evaluate(model, spec, voc, protocol, out_dir=out, protocol_source=source, progress=False, **kw)


def _same_counts(a, b):
    assert a["metrics"] == b["metrics"]
    assert a["dataset"]["num_images"] == b["dataset"]["num_images"]


def test_result_json_markdown_and_saved_predictions(model, voc, tmp_path):
    result = _run(model, voc, tmp_path / "run", save_preds=5)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved) >= {"dataset", "protocol", "protocol_source", "model", "metrics", "speed", "software"}
    assert saved["protocol"]["logit_scale"] == 65.0 and saved["protocol_source"]["logit_scale"] == "dataset voc21"
    assert saved["model"]["config"]["depth"] == 3 and saved["software"]["torch"]
    assert saved["speed"]["images"] == 5 and saved["speed"]["images_per_s"] > 0
    assert len(saved["metrics"]["per_class"]) == 21 and saved["metrics"]["scored_pixels"] > 0
    md = (tmp_path / "run" / "result.md").read_text()
    assert "| mIoU |" in md and "| background |" in md and "| logit_scale | 65.00 |" in md
    assert len(list((tmp_path / "run" / "vis").glob("*.png"))) == 5
    # the saved label maps, scored again from disk, give exactly the same metrics
    rescored = score_folders(tmp_path / "run" / "preds", voc / "SegmentationClass", load_dataset_spec("voc21"))
    assert rescored["metrics"] == result["metrics"]
    assert rescored["dataset"]["gt_files_without_prediction"] == 1  # the train-only image


def test_resume_after_interruption_counts_every_image_once(model, voc, tmp_path):
    reference = _run(model, voc, tmp_path / "ref")
    seen = []

    def interrupt(image_id):
        seen.append(image_id)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(model, voc, tmp_path / "run", save_every=2, on_image=interrupt)
    resumed = _run(model, voc, tmp_path / "run", on_image=seen.append)
    _same_counts(resumed, reference)
    assert len(seen) == 5 and len(set(seen)) == 5  # the 3 finished images were not evaluated again
    assert resumed["speed"]["resumed_images"] == 3 and resumed["speed"]["images"] == 2
    again = _run(model, voc, tmp_path / "run")  # nothing left: the same result from the state
    _same_counts(again, reference)
    # it counted no image: the speed stays the measured one of the session that did (it was null)
    assert again["speed"]["images_per_s"] == resumed["speed"]["images_per_s"] > 0
    assert again["speed"]["resumed_images"] == 5 and again["speed"]["measured_earlier"] is True


KILL_SCRIPT = """
import os, sys, warnings
warnings.simplefilter("ignore")
from gemseg import create_model
from gemseg.eval import evaluate, load_dataset_spec, resolve_protocol
cfg, ckpt, root, out = sys.argv[1:5]
model = create_model(cfg, checkpoint=ckpt, depth=3)
spec = load_dataset_spec("voc21")
protocol, _ = resolve_protocol("sclip", spec, size=48, crop=32, stride=16, templates="single")
done = []
def kill(image_id):
    done.append(image_id)
    if len(done) == 3:
        os._exit(17)  # no cleanup, no final save: as a killed process
evaluate(model, spec, root, protocol, out_dir=out, save_every=2, progress=False, on_image=kill)
"""


def test_resume_after_a_hard_kill_redoes_only_unsaved_images(model, voc, tmp_path, tiny_model_files):
    cfg, ckpt = tiny_model_files["open_clip"]
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, cfg, ckpt, str(voc), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 17, proc.stderr[-2000:]
    seen = []
    resumed = _run(model, voc, tmp_path / "run", on_image=seen.append)
    assert resumed["speed"]["resumed_images"] == 2 and len(seen) == 3  # saved after 2; image 3 was lost
    _same_counts(resumed, _run(model, voc, tmp_path / "ref"))


def test_a_folder_with_other_settings_is_not_resumed(model, voc, tmp_path):
    _run(model, voc, tmp_path / "run", limit=2)
    spec = load_dataset_spec("voc21")
    protocol, _ = resolve_protocol("sclip", spec, **{**SMALL, "logit_scale": 10.0})
    with pytest.raises(StateError, match="protocol"):
        evaluate(model, spec, voc, protocol, out_dir=tmp_path / "run", progress=False)
    with pytest.raises(StateError, match="outside this selection"):
        _run(model, voc, tmp_path / "run", limit=1)
    grown = _run(model, voc, tmp_path / "run", limit=4)  # a larger --limit continues
    assert grown["speed"]["resumed_images"] == 2 and grown["dataset"]["num_images"] == 4
    fresh = evaluate(model, spec, voc, protocol, out_dir=tmp_path / "run", progress=False, restart=True, limit=1)
    assert fresh["speed"]["resumed_images"] == 0


def test_point_labels_p_miou(model, tmp_path):
    root = eval_data.write_openimages(tmp_path / "oi")
    spec = load_dataset_spec("openimages_v7")
    protocol, _ = resolve_protocol("gem", spec, size=32)
    result = evaluate(model, spec, root, protocol, out_dir=tmp_path / "run", progress=False)
    m = result["metrics"]
    rows = [r for r in __import__("csv").DictReader(open(root / spec.points_csv))]
    present = {(r["ImageId"], r["Label"]) for r in rows if r["EstimatedYesNo"] == "yes"}
    # default point_classes="present": only the points of classes with a "yes" point in their image
    assert m["scored_points"] == sum(r["EstimatedYesNo"] != "unsure" and (r["ImageId"], r["Label"]) in present
                                     for r in rows)
    annotated = evaluate(model, spec, root, resolve_protocol("gem", spec, size=32, point_classes="annotated")[0],
                         out_dir=tmp_path / "annotated", progress=False)
    assert annotated["metrics"]["scored_points"] == sum(r["EstimatedYesNo"] != "unsure" for r in rows)
    assert annotated["metrics"]["scored_points"] > m["scored_points"]  # the synthetic set has such images
    assert [c["name"] for c in m["per_class"]] == ["Person", "Tree", "Car"]
    ious = [c["iou"] for c in m["per_class"] if c["iou"] is not None]
    assert m["p-mIoU"] == pytest.approx(sum(ious) / len(ious))
    assert result["dataset"]["unsure_points_in_csv"] > 0
    strict = evaluate(model, spec, root, resolve_protocol("gem", spec, size=32, point_threshold=0.99)[0],
                      out_dir=tmp_path / "strict", progress=False)
    assert sum(c["tp"] for c in strict["metrics"]["per_class"]) <= sum(c["tp"] for c in m["per_class"])
    assert "| p-mIoU |" in (tmp_path / "run" / "result.md").read_text()


def test_cli_eval_compare_and_score(voc, tmp_path, tiny_model_files, capsys):
    cfg, ckpt = tiny_model_files["open_clip"]
    common = ["eval", "--dataset", "voc21", "--data-root", str(voc), "--model", cfg, "--checkpoint", ckpt,
              "--depth", "3", "--device", "cpu", "--workers", "0", "--no-progress", "--size", "48",
              "--templates", "single"]
    assert cli(common + ["--preset", "gem", "--out", str(tmp_path / "a"), "--save-preds", "2", "--limit", "3"]) == 0
    assert cli(common + ["--preset", "sclip", "--crop", "32", "--stride", "16", "--out", str(tmp_path / "b"),
                         "--limit", "3", "--pamr-steps", "2", "--pamr-dilations", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "voc21 gem: mIoU" in out and "voc21 sclip: mIoU" in out
    a, b = (json.loads((tmp_path / x / "result.json").read_text()) for x in "ab")
    assert b["protocol"]["pamr_steps"] == 2 and a["protocol"]["mode"] == "whole"
    assert cli(["eval", "--compare", str(tmp_path / "a" / "result.json"), str(tmp_path / "b" / "result.json")]) == 0
    table = capsys.readouterr().out
    assert "| **mIoU** |" in table and "| protocol.mode | whole | slide |" in table and "| aeroplane |" in table
    assert table == compare_markdown([a, b], names=[str(tmp_path / x / "result.json") for x in "ab"])
    assert cli(["score", "--pred", str(tmp_path / "a" / "preds"), "--gt", str(voc / "SegmentationClass"),
                "--dataset", "voc21", "--json", str(tmp_path / "score.json")]) == 0
    assert "| mIoU |" in capsys.readouterr().out
    assert json.loads((tmp_path / "score.json").read_text())["dataset"]["num_images"] == 2
    assert cli(["score", "--pred", str(tmp_path / "a" / "preds"), "--gt", str(tmp_path / "nowhere"),
                "--dataset", "voc21"]) == 2
    assert "lack a prediction or a ground truth" in capsys.readouterr().err


def test_rerunning_a_finished_run_keeps_its_measured_speed(model, voc, tmp_path):
    """A second run of a finished eval counted no image and wrote images/s null over the real figure."""
    first = _run(model, voc, tmp_path / "run")
    again = _run(model, voc, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert first["speed"]["images_per_s"] > 0
    assert saved["speed"]["images_per_s"] == first["speed"]["images_per_s"] == again["speed"]["images_per_s"]
    assert saved["speed"]["resumed_images"] == 5 and saved["metrics"] == first["metrics"]


def test_an_interrupted_write_of_a_prediction_or_report_leaves_no_partial_file(model, voc, tmp_path, monkeypatch):
    """``--save-preds`` PNGs and ``result.json`` were written in place: a crash mid-write left a truncated
    file. Now the last step of each write (the rename) failing leaves the old file or none, never a partial
    one, and the resumed run redoes the image whose write failed."""
    import os

    real_replace = os.replace
    target = f"{eval_data_ids(voc)[2]}.png"

    def failing_replace(src, dst):
        if os.path.basename(str(dst)) == target and os.path.basename(os.path.dirname(str(dst))) == "preds":
            raise OSError("disk gone")  # as a crash between writing the temporary file and renaming it
        return real_replace(src, dst)

    seen = []
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        _run(model, voc, tmp_path / "run", save_preds=5, save_every=1, on_image=seen.append)
    monkeypatch.setattr(os, "replace", real_replace)
    preds = tmp_path / "run" / "preds"
    assert not (preds / target).exists() and len(seen) == 2
    assert not [p.name for p in preds.iterdir() if not p.name.endswith(".png")]  # no temporary file left
    resumed = _run(model, voc, tmp_path / "run", save_preds=5, on_image=seen.append)
    assert resumed["speed"]["resumed_images"] == 2 and seen[2:] == eval_data_ids(voc)[2:]  # that image again
    ref = _run(model, voc, tmp_path / "ref", save_preds=5)
    _same_counts(resumed, ref)
    for name in sorted(p.name for p in (tmp_path / "ref" / "preds").iterdir()):
        assert (preds / name).read_bytes() == (tmp_path / "ref" / "preds" / name).read_bytes()  # same code, same input

    before = (tmp_path / "run" / "result.json").read_bytes()

    def failing_report(src, dst):
        if os.path.basename(str(dst)) == "result.json":
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_report)
    with pytest.raises(OSError, match="disk gone"):
        _run(model, voc, tmp_path / "run", save_preds=5)
    assert (tmp_path / "run" / "result.json").read_bytes() == before  # the old report, whole
    assert not [p.name for p in (tmp_path / "run").iterdir() if "gemseg-tmp" in p.name]


def eval_data_ids(voc) -> list[str]:
    """The val image ids of the tiny VOC folder, in the order the run takes them."""
    return (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
