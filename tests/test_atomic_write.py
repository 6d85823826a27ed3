"""A file replaced whole stays whole when Ctrl-C / SIGTERM cuts its write short, and the interruption stays an
interruption even when the writer's own clean-up fails after it (torch.save's zip writer raised
"RuntimeError: unexpected pos" from its __exit__, so an interrupted eval exited 1 with a traceback instead of
130 with one line)."""
from __future__ import annotations

import os

import pytest
import torch

from gemseg.files import atomic_write
from gemseg.eval.state import atomic_save


class Terminated(KeyboardInterrupt):
    """Like gemseg.cli.signals' SIGTERM exception: a KeyboardInterrupt subclass."""


def _cut_short(kind):
    def write(f):
        f.write(b"partial")
        try:
            raise kind()
        finally:  # the clean-up of a writer that cannot finish (as torch's zip writer's __exit__)
            raise RuntimeError("unexpected pos 896 vs 790")
    return write


@pytest.mark.parametrize("kind", [KeyboardInterrupt, Terminated])
def test_an_interrupt_behind_a_failed_cleanup_is_raised_and_the_old_file_kept(tmp_path, kind):
    path = tmp_path / "part.pt"
    path.write_bytes(b"old")
    with pytest.raises(kind):
        atomic_write(str(path), _cut_short(kind))
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["part.pt"]  # no temporary file left


def test_other_errors_are_not_turned_into_interrupts(tmp_path):
    def fails(f):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(str(tmp_path / "x"), fails)
    assert os.listdir(tmp_path) == []


def test_atomic_save_round_trips_and_replaces(tmp_path):
    path = tmp_path / "state.pt"
    atomic_save({"ids": ["a"], "counts": {"x": torch.ones(2)}}, path)
    atomic_save({"ids": ["a", "b"], "counts": {"x": torch.zeros(2)}}, path)
    back = torch.load(path, weights_only=True)
    assert back["ids"] == ["a", "b"] and torch.equal(back["counts"]["x"], torch.zeros(2))
    assert sorted(os.listdir(tmp_path)) == ["state.pt"]
