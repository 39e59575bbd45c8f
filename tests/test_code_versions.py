"""A step's code version: the modules its command imports (found in the sources), and the
versions recorded for them, so that a change reruns exactly the jobs of the steps it reaches."""
import json
import subprocess
import sys

import pytest

from im_core import code_versions as cv
from im_core.import_graph import cycles, import_graph


def test_a_steps_closure_holds_its_imports_packages_and_lazy_imports():
    train = set(cv.closure("steps.train"))
    # top-level imports, the packages on the way, and imports inside functions
    assert {"steps", "steps.train", "trainers", "trainers.step", "data.batches", "runtime.resume"} <= train
    pseudo = set(cv.closure("steps.pseudo"))
    assert "models.checkpoints" in pseudo  # imported inside teacher_source only
    assert "builders.ensembles" in pseudo  # through builders/__init__'s table
    # the modules that build a data store from its source reach the steps that read it only
    # through the store, an input of their jobs
    assert "data.synthetic" in cv.closure("steps.prepare") and "data.synthetic" not in train


@pytest.mark.parametrize("step", sorted(cv.STEPS))
def test_every_module_a_step_imports_when_it_runs_is_in_its_closure(step):
    """What the step's module really loads (in a fresh interpreter) is covered by the static closure."""
    entry = cv.STEPS[step]
    code = (f"import sys, json; import im_core.{entry}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('im_core.'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    missing = {m.split(".", 1)[1] for m in loaded} - set(cv.closure(entry)) - {"code_versions"}
    assert not missing, f"{step}: {sorted(missing)}"


def test_the_recorded_version_holds_only_for_the_code_it_was_recorded_for(tmp_path, monkeypatch):
    monkeypatch.setattr(cv, "RECORD", tmp_path / "code_versions.json")
    cv.code_version.cache_clear()
    digest = cv.sources_digest("select")
    assert cv.code_version("select") == digest  # nothing recorded: the digest
    (tmp_path / "code_versions.json").write_text(json.dumps({"select": {"sources": digest, "version": "v-kept"}}))
    cv.code_version.cache_clear()
    assert cv.code_version("select") == "v-kept"
    (tmp_path / "code_versions.json").write_text(json.dumps({"select": {"sources": "other", "version": "v-kept"}}))
    cv.code_version.cache_clear()
    assert cv.code_version("select") == digest  # the code changed since: the digest, so its jobs rerun
    # --update: a changed step gets its digest unless its results are declared the same
    new = cv.update(same_results=["select"])
    assert new["select"] == {"sources": digest, "version": "v-kept"} and new["train"]["version"] == new["train"]["sources"]
    (tmp_path / "code_versions.json").write_text(json.dumps({"select": {"sources": "other", "version": "v-kept"}}))
    assert cv.update()["select"] == {"sources": digest, "version": digest}
    cv.code_version.cache_clear()


def test_the_shipped_record_is_current():
    """Every change of a step's code is decided on: recorded with its new digest as version (its
    jobs rerun), or with the old version where it was shown to change no result."""
    stale = [step for step, s in cv.status().items() if not s["current"]]
    assert not stale, (f"im_core/code_versions.json is not current for {stale}: run `im-core code-versions "
                       "--update` (add `--same-results STEP ...` only for steps whose results you showed unchanged)")


def test_the_package_imports_without_cycles():
    """Between modules, and between the top-level rooms (data, models, builders, trainers, ...)."""
    assert cycles(import_graph()) == []
    rooms = import_graph(packages=True)
    assert cycles(rooms) == []
    # the layering the rooms keep: settings and errors at the bottom; steps at the top, imported by none
    assert rooms["settings"] <= {"errors"} and not any("steps" in targets for room, targets in rooms.items()
                                                         if room != "cli")
    # a cycle is found where there is one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
