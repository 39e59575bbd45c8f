"""The package installs as a wheel (not editable) and runs from any folder: everything it reads at
run time (the config schema, the steps' code versions) is package data."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_wheel_installed_elsewhere_checks_a_config_from_another_folder(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "im_core", source / "im_core", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, text=True)
    [wheel] = (tmp_path / "dist").glob("im_core-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"im_core/config/config.schema.yaml", "im_core/code_versions.json", "im_core/steps/train.py"} <= names
    site = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(REPO / "config.yaml", elsewhere / "my.yaml")
    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run([sys.executable, "-c", "import im_core; print(im_core.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site)  # the installed copy, not this checkout
    ok = subprocess.run([str(site / "bin" / "im-core"), "check-config", "my.yaml"], cwd=elsewhere, env=env,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (elsewhere / "bad.yaml").write_text("datasets: {d: {source: demo}}\nexperiments: {e: {dataset: d, seeds: 1}}\n")
    bad = subprocess.run([str(site / "bin" / "im-core"), "check-config", "bad.yaml"], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "experiments.e: unknown key(s) ['seeds']" in bad.stderr
