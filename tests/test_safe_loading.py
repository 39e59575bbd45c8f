"""No file the project loads can run code: a pickle payload through every entry point that
loads a model or a state is refused (it does not run) with a message that names the file and
says why; files that are not checkpoints get a clear message too."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TRAIN_SETTINGS, Interrupted, interrupt_after_saves, pseudo_settings, replace

from im_core.errors import InputError
from im_core.io import write_json
from im_core.models.checkpoints import checkpoints_by_id, load_checkpoint, read_checkpoint
from im_core.runtime import resume
from im_core.steps import predict, pseudo, segment, train

REPO = Path(__file__).resolve().parents[1]
REFUSED = "holds Python objects other than tensors and plain containers"


class Payload:
    """Unpickling this runs `touch <marker>`."""
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_checkpoint(path: Path, marker: Path, base: dict | None = None) -> Path:
    """A file shaped like a checkpoint (or `base`) that carries the payload."""
    torch.save(dict(base or {"model_id": "gen0_m0"}, payload=Payload(marker)), path)
    return path


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    train.run(str(store), str(d / "m.pt"), TRAIN_SETTINGS, model_id="gen0_m0", progress=False)
    return d / "m.pt"


def test_the_project_writes_checkpoints_and_states_that_load_safely(store, trained, tmp_path):
    ckpt = read_checkpoint(trained)
    assert ckpt["model_id"] == "gen0_m0" and torch.load(trained, weights_only=True)["task"] == "multiclass"
    # a resume state as a kill leaves it, with every generator's state, loads with weights_only too
    settings = replace(TRAIN_SETTINGS, steps=4, eval_every=2)
    out = tmp_path / "r.pt"
    with pytest.MonkeyPatch.context() as m:
        interrupt_after_saves(m, 1)
        with pytest.raises(Interrupted):
            train.run(str(store), str(out), settings, progress=False)
    state = torch.load(resume.resume_path(out), weights_only=True)
    assert state["step"] >= 1 and "random" in state
    # and the resumed run ends where an uninterrupted one does
    train.run(str(store), str(out), settings, progress=False)
    train.run(str(store), str(tmp_path / "straight.pt"), settings, progress=False)
    a, b = torch.load(out, weights_only=True), torch.load(tmp_path / "straight.pt", weights_only=True)
    assert a["resumed_at"] and all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_predict_and_segment_refuse_a_payload(store, trained, tmp_path):
    marker = tmp_path / "ran"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker, torch.load(trained, weights_only=True))
    with pytest.raises(InputError, match=f"evil.pt: not loaded: .*{REFUSED}"):
        predict.run(str(evil), str(store), str(tmp_path / "p.zarr"), ["val"])
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image
    Image.new("RGB", (16, 16)).save(images / "a.png")
    with pytest.raises(InputError, match=f"evil.pt: not loaded: .*{REFUSED}"):
        segment.run(str(images), str(tmp_path / "seg"), str(evil))
    assert not marker.exists() and not (tmp_path / "p.zarr").exists() and not (tmp_path / "seg").exists()


def test_teachers_and_parents_with_a_payload_are_refused(store, trained, tmp_path):
    marker = tmp_path / "ran"
    evil = str(evil_checkpoint(tmp_path / "evil.pt", marker, torch.load(trained, weights_only=True)))
    with pytest.raises(InputError, match=REFUSED):
        checkpoints_by_id([str(trained), evil])
    write_json(tmp_path / "sel.json", {"ranking": ["gen0_m0"], "selected": ["gen0_m0"]})
    predict.run(str(trained), str(store), str(tmp_path / "p0.zarr"), ["val", "test", "unlabeled"])
    with pytest.raises(InputError, match=REFUSED):   # a builder that runs the teachers again
        pseudo.run(str(store), str(tmp_path / "sel.json"), [str(tmp_path / "p0.zarr")], str(tmp_path / "ps.zarr"),
                   pseudo_settings(builder="model_ensemble", teachers=1), 1, checkpoints=[evil])
    settings = replace(TRAIN_SETTINGS, trainer="consistency", options={"consistency_weight": 1.0})
    with pytest.raises(InputError, match=REFUSED):   # a trainer that continues a parent
        train.run(str(store), str(tmp_path / "c.pt"), settings, model_id="gen1_m0", generation=1, progress=False,
                  init_selection=str(tmp_path / "sel.json"), init_checkpoints=[evil])
    assert not marker.exists()


@pytest.mark.parametrize("left", ["resume", "done"])
def test_a_payload_left_as_a_resume_state_or_done_record_is_not_run(store, tmp_path, caplog, left):
    out = tmp_path / "model.pt"
    marker = tmp_path / "ran"
    hidden = resume.resume_path(out) if left == "resume" else resume.done_path(out)
    evil_checkpoint(hidden, marker)
    with caplog.at_level("WARNING"):
        summary = train.run(str(store), str(out), TRAIN_SETTINGS, progress=False)
    assert not marker.exists() and summary["resumed_at"] == []
    assert REFUSED in caplog.text and hidden.name in caplog.text and "posix.system" in caplog.text
    assert "weights_only` set to `False`" not in caplog.text   # torch's advice to load it anyway is not passed on
    assert read_checkpoint(out)["history"]   # trained, from step 0


def test_files_that_are_not_checkpoints_get_a_message_naming_them(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not a model checkpoint of this project \\(torch cannot read it"):
        read_checkpoint(tmp_path / "notes.txt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match="list.pt: not a model checkpoint of this project \\(it holds a list"):
        read_checkpoint(tmp_path / "list.pt")
    torch.save({"state_dict": {}}, tmp_path / "weights.pt")
    with pytest.raises(InputError, match="weights.pt: not a model checkpoint of this project \\(it lacks"):
        read_checkpoint(tmp_path / "weights.pt")
    good = {"state_dict": {"w": torch.zeros(1)}, "model_args": {"in_channels": 3, "out_channels": 2, "alpha": 0.25},
            "model_id": "x", "task": "multiclass", "class_names": ["a", "b"]}
    torch.save(good, tmp_path / "odd.pt")
    with pytest.raises(InputError, match="odd.pt: its weights do not fit the model"):
        load_checkpoint(tmp_path / "odd.pt", torch.device("cpu"))
    torch.save(dict(good, model_args={"in_channels": 3, "shell": "rm"}), tmp_path / "args.pt")
    with pytest.raises(InputError, match="args.pt: model_args .* are not arguments of this project's model"):
        read_checkpoint(tmp_path / "args.pt")
    full = tmp_path / "trunc.pt"
    torch.save(good, full)
    full.write_bytes(full.read_bytes()[:100])
    with pytest.raises(InputError, match="trunc.pt: not a model checkpoint of this project"):
        read_checkpoint(full)


def test_the_commands_say_why_and_run_nothing(store, trained, tmp_path):
    marker = tmp_path / "ran"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker, torch.load(trained, weights_only=True))
    run = subprocess.run([sys.executable, "-m", "im_core.cli", "predict", "--checkpoint", str(evil), "--data", str(store),
                          "--splits", "val", "--out", str(tmp_path / "p.zarr")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert f"{evil}: not loaded" in run.stderr and REFUSED in run.stderr
    assert not marker.exists()
