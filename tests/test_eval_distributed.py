"""Data-parallel evaluation: two gloo processes under torchrun give exactly the single-process result,
and a run resumes across world sizes."""
import json
import os
import socket
import subprocess
import sys

import pytest

import eval_data
from conftest import HAS_OPEN_CLIP
from gemseg.cli import main as cli

pytestmark = [pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed"),
              pytest.mark.filterwarnings("ignore:.*the standard split has:UserWarning")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(voc, out, files):
    cfg, ckpt = files["open_clip"]
    return ["eval", "--dataset", "voc21", "--data-root", str(voc), "--out", str(out), "--model", cfg,
            "--checkpoint", ckpt, "--depth", "3", "--device", "cpu", "--workers", "0", "--no-progress",
            "--preset", "sclip", "--size", "48", "--crop", "32", "--stride", "16", "--templates", "single",
            "--save-every", "1"]


def _torchrun(args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "gemseg.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _result(out):
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return eval_data.write_voc(tmp_path_factory.mktemp("voc") / "VOC2012", n=5)


@pytest.fixture(scope="module")
def single(voc, tiny_model_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    assert cli(_args(voc, out, tiny_model_files)) == 0
    return _result(out)


def test_two_gloo_processes_equal_one(voc, tiny_model_files, single, tmp_path):
    proc = _torchrun(_args(voc, tmp_path, tiny_model_files))
    result = _result(tmp_path)
    assert result["metrics"] == single["metrics"]  # identical confusion matrix, so identical numbers
    assert result["speed"]["world_size"] == 2 and result["speed"]["images"] == 5
    parts = sorted(p.name for p in (tmp_path / "state").glob("part-*.pt"))
    assert parts == ["part-g000-r000.pt", "part-g000-r001.pt"]  # each rank counted its own shard
    assert proc.stdout.count("voc21 sclip: mIoU") == 1  # only rank 0 reports


def test_a_single_process_run_resumes_under_torchrun(voc, tiny_model_files, single, tmp_path):
    assert cli(_args(voc, tmp_path, tiny_model_files) + ["--limit", "2"]) == 0
    _torchrun(_args(voc, tmp_path, tiny_model_files))
    result = _result(tmp_path)
    assert result["metrics"] == single["metrics"]
    assert result["speed"]["resumed_images"] == 2 and result["speed"]["images"] == 3
