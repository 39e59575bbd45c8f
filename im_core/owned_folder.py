"""An output folder the project writes beside a person's files, never over them.

`im-core segment` (and the `segment_images` rule) writes masks and previews into a folder people
open, correct and add notes to. A rerun replaces only what it wrote itself and what nobody has
changed since: the folder keeps a record of the files it wrote with their hashes
(`.im-core-written.json`), a rerun moves its new files in, removes its own old ones that the new
run does not write again, and leaves every other file as it is. Where a new file would land on a
file the project did not write, or on one changed since (a hand-corrected mask), the job stops
before it computes anything and names those files. Everything is first written beside the
folder (a `.partial` sibling, removed on failure) and then moved in.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from .errors import InputError

log = logging.getLogger("im_core.owned_folder")

RECORD = ".im-core-written.json"


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != RECORD)


def _few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


class OwnedFolder:
    """The folder `out` that a command of `kind` writes (its record names the kind)."""

    def __init__(self, out: str | os.PathLike, kind: str, option: str = "--out", who: str | None = None):
        self.out, self.kind, self.option, self.who = Path(out), kind, option, who or kind
        self.record = self._read_record()

    def _read_record(self) -> dict[str, list[str]]:
        path = self.out / RECORD
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            files = data["files"] if data.get("kind") == self.kind else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            files = None
        if not isinstance(files, dict):
            raise InputError(f"{self.option} {self.out}: {RECORD} is not a record of `{self.who}` output; "
                             "choose another folder")
        return files

    def _ours(self, rel: str) -> bool:
        """Written by this command and unchanged since."""
        hashes = self.record.get(rel)
        return bool(hashes) and (self.out / rel).is_file() and file_hash(self.out / rel) in hashes

    def check(self, planned: set[str]) -> None:
        """Refuse, before any work, a folder that is not ours to write into, and any file that
        the planned outputs would replace but that we did not write or that changed since."""
        if not self.out.exists():
            return
        if not self.out.is_dir():
            raise InputError(f"{self.option} {self.out}: a file, not a folder; choose a folder")
        existing = _files(self.out)
        if existing and not self.record:
            raise InputError(f"{self.option} {self.out}: holds files that `{self.who}` did not write "
                             f"({_few(existing)}) and no record of its own; choose a new or empty folder")
        blocked = [rel for rel in existing if rel in planned and not self._ours(rel)]
        if blocked:
            raise InputError(f"{self.option} {self.out}: this run would replace {len(blocked)} file(s) that `{self.who}` "
                             f"did not write or that were changed since it wrote them ({_few(blocked)}); move them "
                             "out of the folder (or choose another folder) and run again")

    def staging(self) -> Path:
        """An empty sibling folder to write the new outputs into (removed by `commit` or `discard`;
        after a kill, io.remove_partials finds it by its name)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        staged = self.out.with_name(f".{self.out.name}.partial-{socket.gethostname()}-{os.getpid()}")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        return staged

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def commit(self, staged: Path) -> dict[str, list[str]]:
        """Move the staged files in; remove our old files the new run did not write again; leave
        every other file. The record names old and new hashes while files move, so a kill then
        leaves a folder the next run still recognises."""
        new = {rel: file_hash(staged / rel) for rel in _files(staged)}
        existing = _files(self.out) if self.out.is_dir() else []
        stale = [rel for rel in existing if rel not in new and self._ours(rel)]
        others = [rel for rel in existing if rel not in new and rel not in stale]
        self.out.mkdir(parents=True, exist_ok=True)
        moving = {rel: sorted(set(self.record.get(rel, [])) | {h}) for rel, h in new.items()}
        self._write_record({**{rel: self.record[rel] for rel in stale}, **moving})
        for rel in new:
            target = self.out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged / rel, target)
        for rel in stale:
            (self.out / rel).unlink(missing_ok=True)
        for folder in sorted({(self.out / rel).parent for rel in stale}, key=lambda p: -len(p.parts)):
            if folder != self.out and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.record = {rel: [h] for rel, h in new.items()}
        self._write_record(self.record)
        self.discard(staged)
        if others:
            log.info("%s: left as they were (not written by %s, or changed since): %s", self.out, self.who, _few(others))
        return self.record

    def _write_record(self, files: dict[str, list[str]]) -> None:
        tmp = self.out / f"{RECORD}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"kind": self.kind, "files": files}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / RECORD)
