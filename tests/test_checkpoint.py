"""Checkpoints hold weights and plain data only; a file holding anything else is refused unrun."""
import numpy as np
import pytest
import torch

from dpm_lab.training.checkpoint import load_checkpoint, save_checkpoint


class WritesMarker:
    """What a tampered checkpoint holds: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_tampered_file_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "shared.ckpt"
    torch.save({"model": {"w": torch.ones(2)}, "payload": WritesMarker(marker)}, path)
    with pytest.raises(ValueError, match="contains objects that are not weights") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)["payload"].close()  # the payload is real: an unsafe
    assert marker.exists()                                    # load does run it


def test_round_trip_and_refusal_to_save_what_could_not_be_loaded(tmp_path):
    state = {"w": torch.arange(3.0), "step": 4, "log": [{"lr": 0.1, "name": "a", "done": None}],
             "rng": torch.get_rng_state(), "milestones": (1, 2)}
    save_checkpoint(state, tmp_path / "a" / "ok.ckpt")
    back = load_checkpoint(tmp_path / "a" / "ok.ckpt")
    for key in ("w", "rng"):
        assert torch.equal(back.pop(key), state.pop(key))
    assert back == state and list((tmp_path / "a").iterdir()) == [tmp_path / "a" / "ok.ckpt"]
    with pytest.raises(TypeError, match=r"checkpoint\['log'\]\[0\]\['lr'\] is a numpy.float64"):
        save_checkpoint({"log": [{"lr": np.float64(0.1)}]}, tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()
