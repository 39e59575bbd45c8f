"""What a data store was built from: every file under the data set's folder (its path relative
to the folder, size and modification time) and its split lists, as a manifest and a short
fingerprint (torch-free: the workflow computes it when it plans the jobs).

The fingerprint is one of the data preparation job's params, so a corrected mask, an added,
removed or replaced image (even one restored with an older time) or an edited split list
reruns the preparation and, through the new store, everything after it; `snakemake -n` gives
"Params have changed" as the reason, and the workflow names the files that differ from what
the store recorded. Hidden files and folders (".name") are left out, as the sources skip them;
symlinked folders are followed once each (a link back into the tree is not walked twice).
Size and time cost one stat per file at every plan. A copy or checkout of the data (a new
machine, `cp` without -p, `git clone`) gives every file a new time with the same bytes, so the
store also records each file's SHA-256 (`content_hashes`): where only times differ from its
record and the bytes of those files are what it was built from (`same_content`), the workflow
keeps the store (and everything after it) and reads only the files whose time changed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .split_lists import split_list_path

Manifest = list[tuple[str, int, int]]     # (relative path, size in bytes, mtime in ns)


def source_roots(cfg: dict) -> list[Path]:
    """The folders and files a data set is read from: its `path` (folder and suim sources) and
    its split lists; nothing for the built-in demo sources."""
    if not cfg.get("path"):
        return []
    roots = [Path(cfg["path"])]
    for split in (cfg.get("split_lists") or {}):
        roots.append(split_list_path(cfg, split))
    return roots


def _walk(root: Path) -> Manifest:
    if root.is_file():
        st = root.stat()
        return [(root.name, st.st_size, st.st_mtime_ns)]
    found: Manifest = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:   # a symlink loop, or two links to one folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            try:
                st = path.stat()
            except OSError:  # a broken link: the source reports what it cannot read
                continue
            found.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return found


def source_manifest(cfg: dict) -> dict[str, Manifest]:
    """Root (as given) -> its files; a root that does not exist has none (the preparation says
    what is missing)."""
    return {str(root): _walk(root) if root.exists() else [] for root in source_roots(cfg)}


def fingerprint(manifest: dict[str, Manifest]) -> str:
    """16 hex digits of the manifest; "" for a data set read from no files."""
    if not manifest:
        return ""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def source_fingerprint(cfg: dict) -> str:
    return fingerprint(source_manifest(cfg))


def _file(root: str, relative: str) -> Path:
    """A manifest entry's file: a root that is a file (a split list) is its own single entry."""
    return Path(root) if Path(root).is_file() else Path(root) / relative


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hashes(manifest: dict[str, Manifest]) -> dict[str, dict[str, str]]:
    """Root -> relative path -> SHA-256 of the file's bytes, for every file of the manifest."""
    return {root: {relative: _sha256(_file(root, relative)) for relative, _, _ in files}
            for root, files in manifest.items()}


def _changed(root: str, relative: str, before: tuple[int, int], after: tuple[int, int],
             hashes: dict[str, dict[str, str]] | None) -> bool:
    """Whether a file in both manifests changed: a new size, or a new time with bytes that are not
    the recorded ones (read only here, where the time differs; no recorded hash counts as changed)."""
    if before == after:
        return False
    known = (hashes or {}).get(root, {}).get(relative)
    if before[0] != after[0] or known is None:
        return True
    try:
        return _sha256(_file(root, relative)) != known
    except OSError:
        return True


def same_content(recorded: dict[str, Manifest], hashes: dict[str, dict[str, str]] | None,
                 now: dict[str, Manifest]) -> bool:
    """Whether `now` holds the same files, sizes and bytes as the store's record, whatever their
    times: no file added, removed or changed (`differences`; a file whose time differs and has no
    recorded hash, as in a store built before hashes were recorded, counts as changed)."""
    return not differences(recorded, now, hashes=hashes)


def differences(recorded: dict[str, Manifest], now: dict[str, Manifest], limit: int = 5,
                hashes: dict[str, dict[str, str]] | None = None) -> list[str]:
    """What changed between two manifests, for people: "changed masks/a.png", "added ...", "removed ...";
    with the record's `hashes`, a file whose time alone changed (same bytes) is not named."""
    out = []
    for root in sorted(set(recorded) | set(now)):
        before = {p: (s, t) for p, s, t in recorded.get(root, [])}
        after = {p: (s, t) for p, s, t in now.get(root, [])}
        out += [f"added {root}/{p}" for p in sorted(set(after) - set(before))]
        out += [f"removed {root}/{p}" for p in sorted(set(before) - set(after))]
        out += [f"changed {root}/{p}" for p in sorted(set(before) & set(after))
                if _changed(root, p, before[p], after[p], hashes)]
    return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])
