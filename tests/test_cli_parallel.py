"""`gemseg segment` and `gemseg heatmap` data-parallel under torchrun (two gloo processes on the CPU):
the same files as one process, resumable across world sizes, one summary."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_util import model_args, run_cli, tree, write_image
from conftest import HAS_OPEN_CLIP

pytestmark = pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip_torch not installed")
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
VOLATILE = {"timing", "model"}  # per-run fields of record.json: seconds, and the device line of the model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, nproc=2):
    import torch

    # each rank with the thread count of this process: the same kernels on the same inputs as the
    # one-process run, hence the same pixels
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "gemseg.cli", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, size in enumerate([(40, 30), (36, 44), (48, 32), (30, 30), (44, 36)]):
        write_image(folder / f"img{i}.png", size, seed=i)
    return folder


def _same_outputs(a, b) -> None:
    """Every file of run ``a`` is in run ``b``: pictures and label maps pixel for pixel (the same kernels on
    the same inputs, one image per forward pass), records field for field except timings."""
    files = tree(a) - {"run.json"}
    assert files == tree(b) - {"run.json"} and files
    for rel in sorted(files):
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if rel.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb))), rel
        elif rel.endswith(".json"):
            ja, jb = (json.load(open(p, encoding="utf-8")) for p in (pa, pb))
            if "settings_id" in ja:  # a record
                ja, jb = ({k: v for k, v in j.items() if k not in VOLATILE} for j in (ja, jb))
            assert ja == jb, rel


@pytest.mark.parametrize("command, what", [("segment", ["-c", "cat,dog", "--export", "coco,masks"]),
                                           ("heatmap", ["-p", "cat", "-p", "dog"])])
def test_two_processes_write_the_same_files_as_one(command, what, images, tiny_model_files, tmp_path, capsys):
    common = [command, images, *what, *model_args(tiny_model_files)]
    r = run_cli(capsys, *common, "-o", tmp_path / "one")
    assert r.code == 0, r.err
    proc = _torchrun([*common, "-o", tmp_path / "two"])
    _same_outputs(tmp_path / "one", tmp_path / "two")
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["world_size"] == 2 and run["last_run"]["done"] == 5 and run["last_run"]["failed"] == 0
    summaries = [line for line in proc.stderr.splitlines() if f"gemseg: {command}: " in line]
    assert len(summaries) == 1 and "5 done" in summaries[0]  # rank 0 reports, for every rank


def test_a_run_resumes_across_world_sizes(images, tiny_model_files, tmp_path, capsys):
    common = ["segment", images, "-c", "cat", *model_args(tiny_model_files), "-o", tmp_path / "out"]
    r = run_cli(capsys, "segment", images / "img0.png", images / "img3.png", "-c", "cat",
                *model_args(tiny_model_files), "-o", tmp_path / "out")
    assert r.code == 0, r.err
    _torchrun(common)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["last_run"]["done"] == 3 and run["last_run"]["skipped"] == 2  # the two done before
    r = run_cli(capsys, *common)  # and back to one process: nothing left to do
    assert r.code == 0 and "0 done, 0 failed, 5 skipped" in r.err
