"""core.checkpoint: the atomic save and the checked ``weights_only`` load every domain uses."""

import pytest
import torch

from equipoise.core.checkpoint import load_checkpoint, save_checkpoint


class _Arbitrary:
    """A class weights_only loading must refuse (it would run arbitrary unpickling)."""


def test_round_trip_leaves_only_the_file(tmp_path):
    checkpoint = {"format": "equipoise.test/1", "model": {"w": torch.arange(3.0)}, "epoch": 2}
    path = save_checkpoint(tmp_path / "run" / "model.pt", checkpoint)
    assert [entry.name for entry in path.parent.iterdir()] == ["model.pt"]
    loaded = load_checkpoint(path, "equipoise.test/1", required=("model", "epoch"))
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(3.0))


def test_every_bad_file_raises_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt", "equipoise.test/1")
    good = save_checkpoint(tmp_path / "good.pt", {"format": "equipoise.test/1"})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated.pt.*corrupt"):
        load_checkpoint(truncated, "equipoise.test/1")
    pickled = tmp_path / "pickled.pt"  # an arbitrary object: refused by weights_only, never unpickled
    torch.save({"format": "equipoise.test/1", "object": _Arbitrary()}, pickled)
    with pytest.raises(ValueError, match="corrupt or not a torch checkpoint"):
        load_checkpoint(pickled, "equipoise.test/1")
    with pytest.raises(ValueError, match="not an equipoise.other/1 checkpoint \\(format 'equipoise.test/1'\\)"):
        load_checkpoint(good, "equipoise.other/1")
    with pytest.raises(ValueError, match="is missing model, epoch"):
        load_checkpoint(good, "equipoise.test/1", required=("format", "model", "epoch"))
    bare = tmp_path / "bare.pt"
    torch.save([1, 2], bare)
    with pytest.raises(ValueError, match="format 'list'"):
        load_checkpoint(bare, "equipoise.test/1")
