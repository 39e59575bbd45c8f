"""The `prepare_data` job: a data set's zarr store from its source (data/store.py), with what it
was built from (data/provenance.py) in its attributes."""
from __future__ import annotations

import os

from ..data.provenance import content_hashes, fingerprint, source_manifest
from ..data.store import prepare
from ..io import open_store


def run(settings: dict, out: str | os.PathLike, threads: int = 1) -> dict:
    """`settings`: the data set's resolved config entry (config/datasets.py)."""
    manifest = source_manifest(settings)   # before reading: a file changed meanwhile differs from the record
    hashes = content_hashes(manifest)      # so that a copy with new times keeps the store (provenance.same_content)
    result = prepare(settings, out, threads=threads)
    store = open_store(out, mode="r+")
    store.attrs["built_from"] = {"settings": settings, "fingerprint": fingerprint(manifest),
                                 "files": {root: len(files) for root, files in manifest.items()}}
    store.attrs["source_manifest"] = manifest
    store.attrs["source_hashes"] = hashes
    return dict(result, fingerprint=fingerprint(manifest))
