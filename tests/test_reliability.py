"""Outputs owned by one job, what interrupted runs leave, and errors in the job's log."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import train_params

from im_core import io


@pytest.fixture(autouse=True)
def no_claims_left():
    yield
    io.release_claims()


def test_an_orphaned_job_does_not_replace_a_newer_runs_output(tmp_path):
    out = tmp_path / "scores.json"
    io.claim_outputs([out])
    # a newer run of the same job takes the output over and finishes first
    claim = tmp_path / ".scores.json.claim"
    claim.write_text("other-host-1-2")
    out.write_text('{"newer": true}')
    with pytest.raises(io.OutputConflict, match="scores.json"):
        io.write_json(out, {"orphan": True})
    assert json.loads(out.read_text()) == {"newer": True}
    assert not list(tmp_path.glob(".scores.json.partial-*"))
    io.release_claims()
    assert claim.read_text() == "other-host-1-2"  # the newer run's claim stays


def test_the_job_holding_the_claim_replaces_what_an_orphan_wrote(tmp_path):
    out = tmp_path / "model.pt"
    out.write_text("written by an orphan")
    io.claim_outputs([out])
    io.write_json(out, {"mine": 1})
    assert json.loads(out.read_text()) == {"mine": 1}
    io.release_claims()
    assert not (tmp_path / ".model.pt.claim").exists()


def test_claiming_removes_partial_outputs_of_killed_runs(tmp_path):
    out = tmp_path / "pseudo.zarr"
    (tmp_path / ".pseudo.zarr.partial-host-123").mkdir()
    (tmp_path / ".pseudo.zarr.partial-host-123" / "chunk").write_text("x")
    (tmp_path / ".other.zarr.partial-host-9").mkdir()
    removed = io.claim_outputs([out])
    assert [p.name for p in removed] == [".pseudo.zarr.partial-host-123"]
    assert (tmp_path / ".other.zarr.partial-host-9").exists()


def test_an_unwritable_output_folder_is_named_before_the_job_starts(tmp_path):
    (tmp_path / "results").write_text("a file where the output folder should be")
    with pytest.raises(io.InputError, match="cannot write"):
        io.claim_outputs([tmp_path / "results" / "gen0" / "x.json"])


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "im_core.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_an_unexpected_error_goes_to_the_log_with_the_step_and_file(store, tmp_path):
    broken = tmp_path / "broken.pt"   # a checkpoint whose model cannot be built: nothing a check foresaw
    torch.save({"state_dict": {}, "model_args": {"in_channels": 3, "out_channels": 2, "alpha": -1.0},
                "model_id": "m", "task": "multiclass", "class_names": ["a", "b"]}, broken)
    log = tmp_path / "predict.log"
    proc = _cli("predict", "--checkpoint", str(broken), "--data", str(store), "--out", str(tmp_path / "p.zarr"),
                "--log", str(log))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    text = log.read_text()
    assert "step predict failed" in text and "broken.pt" in text and "Traceback" in text
    assert "predict.log" in err
    assert not list(tmp_path.glob(".p.zarr.*"))


def test_sigterm_during_training_leaves_no_partial_output(store, tmp_path):
    out = tmp_path / "m.pt"
    settings = train_params(steps=100000, eval_every=5)
    log = tmp_path / "train.log"
    proc = _cli("train", "--data", str(store), "--settings", json.dumps(settings), "--out", str(out),
                "--log", str(log), "--no-progress")
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / ".m.pt.resume").exists():  # a validation has saved the state
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted" in log.read_text()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.pt"))
    assert left == [".m.pt.resume"]  # only the state a rerun resumes from
    assert not out.exists()


def test_a_full_disk_leaves_no_partial_output(tmp_path):
    out = tmp_path / "pseudo.zarr"
    with pytest.raises(OSError, match="No space left"):
        with io.atomic_output(out) as tmp:
            tmp.mkdir()
            (tmp / "chunk").write_bytes(b"x" * 100)
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []
