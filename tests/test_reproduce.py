"""scripts/reproduce.sh: one error line per missing dataset or weight and an exit status that says so;
where data and weights exist, our number beside the published one. Nothing is downloaded."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import eval_data
from conftest import write_tiny_open_clip
from gemseg.eval import load_dataset_spec
from gemseg.eval.protocols import PRESETS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce.sh"


def _run(table, env, *extra):
    full = {**os.environ, "GEMSEG_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
            **env}
    return subprocess.run(["bash", str(SCRIPT), table, *extra], env=full, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


@pytest.mark.parametrize("table", sorted(PRESETS))
def test_nothing_present_gives_one_line_per_dataset_and_weight(tmp_path, table):
    result = _run(table, {"GEMSEG_DATA": str(tmp_path), "GEMSEG_CHECKPOINT": str(tmp_path / "missing.pt"),
                          "GEMSEG_OUT": str(tmp_path / "runs")})
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    datasets = PRESETS[table].datasets
    assert len(lines) == 1 + len(datasets), lines
    assert lines[0] == f"reproduce: error: weights checkpoint {tmp_path / 'missing.pt'} are not available"
    for line, name in zip(lines[1:], datasets):
        assert line == (f"reproduce: error: {name}: no data at {tmp_path}/{load_dataset_spec(name).root} "
                        "(set GEMSEG_DATA; see docs/evaluation.md)")
    assert result.stdout == ""
    assert not (tmp_path / "runs").exists()


def test_bad_usage():
    assert _run("", {}).returncode == 2
    result = _run("mmseg", {})
    assert result.returncode == 2 and "unknown table 'mmseg'" in result.stderr


def test_present_data_is_evaluated_and_printed_beside_the_published_number(tmp_path):
    (tmp_path / "model").mkdir()
    config, checkpoint = write_tiny_open_clip(tmp_path / "model")
    eval_data.write_voc(tmp_path / "data" / "VOCdevkit" / "VOC2012", n=2)
    result = _run("sclip", {"GEMSEG_DATA": str(tmp_path / "data"), "GEMSEG_MODEL": config,
                            "GEMSEG_CHECKPOINT": checkpoint, "GEMSEG_OUT": str(tmp_path / "runs")},
                  "--device", "cpu", "--workers", "0")
    assert result.returncode == 1, result.stderr  # six of the eight datasets are missing
    missing = [line for line in result.stderr.splitlines() if line.startswith("reproduce: error:")]
    assert len(missing) == 6 and not any("voc21" in m or "voc20" in m for m in missing)
    table = result.stdout.strip().splitlines()[-3:]
    assert table[0].split() == ["sclip", "ours", "published"]
    for row, name in zip(table[1:], ("voc21", "voc20")):
        got, ours, published = row.split()
        assert got == name and 0 <= float(ours) <= 100
        assert float(published) == PRESETS["sclip"].published_for(name).miou  # first-hand: no "*"
        assert (tmp_path / "runs" / name / "result.json").is_file()


def test_the_docs_table_shows_each_records_published_number():
    rows = [line.split(" | ") for line in (ROOT / "docs" / "reproduce.md").read_text().splitlines()
            if line.startswith("| `") and "gemseg eval" in line]
    seen = set()
    for cells in rows:
        dataset, command, cell = cells[0].strip("| `"), cells[1], cells[2]
        preset = command.split("--preset ")[1].split()[0]
        number = PRESETS[preset].published_for(dataset)
        want = "–" if number is None else f"{number.miou:.2f}" + ("\\*" if number.second_hand else "")
        assert cell == want, (preset, dataset)
        seen.add((preset, dataset))
    assert seen == {(name, d) for name, p in PRESETS.items() for d in p.datasets}  # every table, every dataset
