"""An output folder written beside a person's files, never over them (im_core/owned_folder.py)."""
import json

import pytest

from im_core.errors import InputError
from im_core.owned_folder import RECORD, OwnedFolder


def write(folder, files):
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def run(out, files, kind="k"):
    folder = OwnedFolder(out, kind)
    folder.check(set(files))
    staged = folder.staging()
    write(staged, files)
    return folder.commit(staged)


def test_a_rerun_replaces_its_own_files_and_leaves_the_persons(tmp_path):
    out = tmp_path / "out"
    run(out, {"masks/a.png": "a1", "masks/b.png": "b1", "summary.json": "s1"})
    (out / "notes.txt").write_text("mine")
    (out / "masks" / "extra.png").write_text("a mask I drew")
    record = run(out, {"masks/a.png": "a2", "summary.json": "s2"})     # b is no longer an input
    assert (out / "masks/a.png").read_text() == "a2" and not (out / "masks/b.png").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "masks/extra.png").read_text() == "a mask I drew"
    assert set(record) == {"masks/a.png", "summary.json"}
    assert set(json.loads((out / RECORD).read_text())["files"]) == {"masks/a.png", "summary.json"}
    assert not list(tmp_path.glob(".out.partial*"))


def test_a_changed_or_foreign_file_where_an_output_goes_stops_the_run_before_it_starts(tmp_path):
    out = tmp_path / "out"
    run(out, {"masks/a.png": "a1", "summary.json": "s1"})
    (out / "masks/a.png").write_text("hand-corrected")
    with pytest.raises(InputError, match=r"would replace 1 file\(s\) .* changed since it wrote them \(masks/a.png\)"):
        OwnedFolder(out, "k").check({"masks/a.png", "summary.json"})
    (out / "masks/a.png").write_text("a1")
    (out / "masks/c.png").write_text("someone else's")
    with pytest.raises(InputError, match=r"did not write .*\(masks/c.png\)"):
        OwnedFolder(out, "k").check({"masks/a.png", "masks/c.png"})
    assert (out / "masks/c.png").read_text() == "someone else's"


def test_a_folder_without_a_record_is_not_written_into(tmp_path):
    out = tmp_path / "out"
    write(out, {"thesis.tex": "x"})
    with pytest.raises(InputError, match=r"holds files that `k` did not write \(thesis.tex\) and no record"):
        OwnedFolder(out, "k").check({"a.png"})
    (out / "thesis.tex").unlink()
    OwnedFolder(out, "k").check({"a.png"})    # empty: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="a file, not a folder"):
        OwnedFolder(tmp_path / "file", "k").check(set())
    write(out, {RECORD: json.dumps({"kind": "other", "files": {}})})
    with pytest.raises(InputError, match="not a record of `k` output"):
        OwnedFolder(out, "k")
