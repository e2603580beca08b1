"""core.checkpoint: atomic save, checked ``weights_only`` load, sha256-verified weight files, deferred Ctrl-C."""

import os
import signal

import pytest
import torch

from equipoise.core.checkpoint import (
    DeferredInterrupt,
    file_sha256,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
)


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
    # Cut inside the data records: torch's zip reader raises OSError ("[Errno 22] Invalid argument") there.
    big = save_checkpoint(tmp_path / "big.pt", {"format": "equipoise.test/1", "w": torch.zeros(1000)})
    for fraction in (0.5, 0.8):
        truncated.write_bytes(big.read_bytes()[: int(big.stat().st_size * fraction)])
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


def test_state_dict_files_are_checked(tmp_path):
    good = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(2)}, good)
    digest = file_sha256(good)
    assert torch.equal(load_state_dict_file(good, digest[:8])["w"], torch.ones(2))
    assert torch.equal(load_state_dict_file(good, digest.upper())["w"], torch.ones(2))
    with pytest.raises(ValueError, match="at least 8 hex digits"):
        load_state_dict_file(good, "abc")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt or not a torch file"):
        load_state_dict_file(tmp_path / "junk.pth")
    torch.save({"w": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="is not a state_dict"):
        load_state_dict_file(tmp_path / "list.pth")


def test_deferred_interrupt_holds_the_first_ctrl_c_and_raises_on_the_second():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with DeferredInterrupt() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested  # held: the loop finishes its step, saves, then raises itself
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup
        with DeferredInterrupt() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not stop.requested
    finally:
        signal.signal(signal.SIGINT, previous)
