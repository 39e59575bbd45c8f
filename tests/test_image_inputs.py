"""Image inputs beyond 8-bit RGB, read the same way by data preparation and `im-core segment`:
bit depth (16-bit gray and RGB, 12-bit in 16, float TIFF), EXIF orientation, symlinked folders and
the decompression-bomb limit. The test images are written here (numpy, Pillow, a small PNG writer
for 16-bit RGB, which Pillow cannot write)."""
import json
import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from im_core import config as imc
from im_core.data.images import image_header, intensity_rule, read_image
from im_core.data.store import prepare
from im_core.errors import InputError
from im_core.io import open_store
from im_core.steps import segment
from test_segment import make_checkpoint

RNG = np.random.default_rng(7)


# ---------------------------------------------------------------- writing test images

def png16(path: Path, values: np.ndarray) -> Path:
    """A 16-bit PNG (H x W gray or H x W x 3 RGB) written byte by byte, each row with another of
    the five PNG filters (so decoding must undo Sub, Up, Average and Paeth over 16-bit samples)."""
    h, w = values.shape[:2]
    colour = 2 if values.ndim == 3 else 0
    bpp = 6 if colour == 2 else 2
    rows = [np.frombuffer(values[y].astype(">u2").tobytes(), np.uint8).astype(np.int32) for y in range(h)]
    out, prev = [], np.zeros_like(rows[0])
    for y, row in enumerate(rows):
        kind = y % 5
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        corner = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        if kind == 0:
            f = row
        elif kind == 1:
            f = row - left
        elif kind == 2:
            f = row - prev
        elif kind == 3:
            f = row - (left + prev) // 2
        else:
            pa, pb, pc = np.abs(prev - corner), np.abs(left - corner), np.abs(left + prev - 2 * corner)
            f = row - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, corner))
        out.append(bytes([kind]) + (f % 256).astype(np.uint8).tobytes())
        prev = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"".join(out))) + chunk(b"IEND", b""))
    return path


def save(array: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def mask(h: int = 16, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (h, w), dtype=np.uint8)


def rotated_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def dataset(root: Path, **extra) -> dict:
    """A folder data set entry as the workflow gets it (validated, defaults filled in)."""
    ds = {"source": "folder", "path": str(root), "class_names": ["bg", "fg"], "seed": 0, "labeled_fraction": 0.5,
          "val_fraction": 0.25, "test_fraction": 0.25, **extra}
    return imc.validate_config({"datasets": {"d": ds}, "experiments": {}})["datasets"]["d"]


def stored(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The data store's images and masks by name."""
    store = open_store(out)
    images, masks = store["images"][:], store["masks"][:]
    return {name: (images[i], masks[i]) for i, name in enumerate(store.attrs["names"])}


def eight_bit_pairs(root: Path, names: list[str], h: int = 16, w: int = 16) -> None:
    for i, name in enumerate(names):
        save(RNG.integers(0, 256, (h, w), dtype=np.uint8), root / "images" / name)
        save(mask(h, w, i), root / "masks" / Path(name).with_suffix(".png"))


# ---------------------------------------------------------------- bit depth

def test_16bit_gray_png_is_scaled_by_the_full_range_and_16bit_masks_read_as_indices(tmp_path):
    root = tmp_path / "data"
    values = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)   # k * 257 -> k
    save(values, root / "images" / "wide.png")
    assert Image.open(root / "images" / "wide.png").mode == "I;16"
    save(mask().astype(np.uint16), root / "masks" / "wide.png")            # a 16-bit mask holding 0 and 1
    assert Image.open(root / "masks" / "wide.png").mode == "I;16"
    eight_bit_pairs(root, ["a.png", "b.png", "c.png"])
    prepare(dataset(root), tmp_path / "d.zarr")
    image, m = stored(tmp_path / "d.zarr")["wide.png"]
    assert image[..., 0].tolist() == np.arange(256).reshape(16, 16).tolist()   # not saturated at 255
    assert (m == mask()).all()


def test_16bit_rgb_png_keeps_all_16_bits(tmp_path):
    root = tmp_path / "data"
    values = RNG.integers(0, 4096, (16, 16, 3)).astype(np.uint16)   # 12-bit data: Pillow's top byte is 0..15
    png16(root / "images" / "rgb16.png", values)
    assert Image.open(root / "images" / "rgb16.png").mode == "RGB"   # Pillow alone gives the top bytes only
    save(mask(), root / "masks" / "rgb16.png")
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        save(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8), root / "images" / name)
        save(mask(seed=i), root / "masks" / name)
    prepare(dataset(root), tmp_path / "auto.zarr")
    auto = stored(tmp_path / "auto.zarr")["rgb16.png"][0]
    assert auto.tolist() == np.rint(values / 257).astype(np.uint8).tolist()
    prepare(dataset(root, intensity_range=[0, 4095]), tmp_path / "12bit.zarr")
    twelve = stored(tmp_path / "12bit.zarr")["rgb16.png"][0]
    assert twelve.tolist() == np.rint(values.astype(float) * 255 / 4095).astype(np.uint8).tolist()   # the low bytes count
    assert len(np.unique(twelve)) > 200


def test_float_tiff_is_scaled_from_0_1_and_values_outside_are_an_error(tmp_path):
    root = tmp_path / "data"
    values = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    save(values, root / "images" / "f.tif")
    assert Image.open(root / "images" / "f.tif").mode == "F"
    save(mask(), root / "masks" / "f.png")
    eight_bit_pairs(root, ["a.png", "b.png", "c.png"])
    prepare(dataset(root), tmp_path / "d.zarr")
    image = stored(tmp_path / "d.zarr")["f.tif"][0][..., 0]
    assert image.tolist() == np.rint(values * 255).astype(np.uint8).tolist()   # not all zero
    save(values * 3.5, root / "images" / "f.tif")   # a float image in 0..3.5
    with pytest.raises(InputError, match=r"f\.tif: float image with values 0 \.\. 3\.5, outside 0 \.\. 1.*"
                                         r"datasets\.d\.intensity_range: \[0, 4\]"):
        prepare(dataset(root), tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()
    prepare(dataset(root, intensity_range=[0, 3.5]), tmp_path / "ranged.zarr")
    image = stored(tmp_path / "ranged.zarr")["f.tif"][0][..., 0]
    assert image.tolist() == np.rint(values * 255).astype(np.uint8).tolist()


def test_12bit_data_in_16bit_png_is_named_in_a_warning_and_read_whole_with_a_range(tmp_path, caplog):
    root = tmp_path / "data"
    values = RNG.integers(0, 4096, (16, 16)).astype(np.uint16)
    save(values, root / "images" / "cam.png")
    save(mask(), root / "masks" / "cam.png")
    eight_bit_pairs(root, ["a.png", "b.png", "c.png"])
    with caplog.at_level(logging.WARNING, "im_core.data"):
        prepare(dataset(root), tmp_path / "auto.zarr")
    warned = [r.getMessage() for r in caplog.records if "12-bit" in r.getMessage()]
    assert len(warned) == 1 and "cam.png" in warned[0] and "datasets.d.intensity_range: [0, 4095]" in warned[0]
    assert stored(tmp_path / "auto.zarr")["cam.png"][0][..., 0].tolist() == np.rint(values / 257).astype(np.uint8).tolist()
    caplog.clear()
    with caplog.at_level(logging.WARNING, "im_core.data"):
        prepare(dataset(root, intensity_range=[0, 4095]), tmp_path / "12bit.zarr")
    assert not [r for r in caplog.records if "12-bit" in r.getMessage()]
    image = stored(tmp_path / "12bit.zarr")["cam.png"][0][..., 0]
    assert image.tolist() == np.rint(values.astype(float) * 255 / 4095).astype(np.uint8).tolist()


def test_other_depths_dtype_rule_and_bad_settings(tmp_path):
    wide = save(np.array([[0, 100_000], [50_000, 70_000]], np.int32), tmp_path / "i32.tif")
    assert Image.open(wide).mode == "I"
    with pytest.raises(InputError, match=r"i32\.tif: 32-bit integer image with values 0 \.\. 100000, outside 0 \.\. "
                                         r"65535"):
        read_image(wide, 1)
    dtype = read_image(wide, 1, intensity_rule("dtype"))[..., 0]
    assert dtype.tolist() == np.rint((np.array([[0, 1e5], [5e4, 7e4]]) + 2**31) * 255 / (2**32 - 1)).tolist()
    with pytest.raises(InputError, match="dtype"):
        intensity_rule("wide", "datasets.d.intensity_range")
    with pytest.raises(InputError, match=r"datasets\.d\.intensity_range: \[9, 1\]: low must be below high"):
        dataset(tmp_path, intensity_range=[9, 1])
    tifffile = pytest.importorskip("tifffile")
    rgbf = tmp_path / "rgbf.tif"
    values = RNG.random((5, 7, 3)).astype(np.float32)
    tifffile.imwrite(rgbf, values, photometric="rgb")   # Pillow cannot open float RGB TIFFs
    assert image_header(rgbf) == (5, 7, False)
    assert read_image(rgbf, 3).tolist() == np.rint(values * 255).astype(np.uint8).tolist()


def test_16bit_gray_with_alpha_is_refused_by_name(tmp_path):
    path = tmp_path / "ga.png"
    values = RNG.integers(0, 65536, (4, 4, 2)).astype(np.uint16)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(4))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 16, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with pytest.raises(InputError, match=r"ga\.png: PNG with 16 bits per sample.*cannot be read faithfully"):
        read_image(path)


# ---------------------------------------------------------------- EXIF orientation

def test_exif_orientation_of_images_and_masks_in_preparation(tmp_path):
    root = tmp_path / "data"
    stored_pixels = RNG.integers(0, 256, (16, 32, 3), dtype=np.uint8)   # 32 wide, 16 high as stored
    save(stored_pixels, root / "images" / "phone.jpg", exif=rotated_exif(6), quality=95)   # shown 16 wide, 32 high
    raw_mask = mask(16, 32)
    save(raw_mask, root / "masks" / "phone.png", exif=rotated_exif(6))   # the mask, stored as its image is
    assert image_header(root / "images" / "phone.jpg") == (32, 16, False)
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        save(RNG.integers(0, 256, (32, 16, 3), dtype=np.uint8), root / "images" / name)
        save(mask(32, 16, i), root / "masks" / name)
    prepare(dataset(root), tmp_path / "d.zarr")   # one size from the headers: the displayed one
    image, m = stored(tmp_path / "d.zarr")["phone.jpg"]
    with Image.open(root / "images" / "phone.jpg") as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert image.shape == (32, 16, 3) and (image == shown).all()
    assert (m == np.rot90(raw_mask, -1)).all()   # orientation 6: turned clockwise


def test_segment_writes_masks_at_the_displayed_orientation(tmp_path):
    images = tmp_path / "in"
    save(RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8), images / "phone.jpg", exif=rotated_exif(6))
    ckpt = make_checkpoint(tmp_path / "m.pt")
    segment.run(str(images), str(tmp_path / "out"), str(ckpt))
    labels = Image.open(tmp_path / "out" / "masks" / "phone.png")
    preview = Image.open(tmp_path / "out" / "previews" / "phone.png")
    assert labels.size == preview.size == (24, 40)   # (width, height) as displayed; stored: 40 x 24
    with Image.open(images / "phone.jpg") as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert (np.asarray(preview) == segment.blend(shown, np.asarray(labels), make_palette())).all()


def make_palette():
    from test_segment import PALETTE
    return PALETTE[:3]


# ---------------------------------------------------------------- bit depth in segment

def test_segment_reads_bit_depth_as_preparation_does(tmp_path, caplog):
    images = tmp_path / "in"
    values = RNG.integers(0, 4096, (20, 30)).astype(np.uint16)
    save(values, images / "cam.png")
    ckpt = make_checkpoint(tmp_path / "m.pt", in_channels=1)
    with caplog.at_level(logging.WARNING, "im_core.data"):
        segment.run(str(images), str(tmp_path / "auto"), str(ckpt))
    assert any("cam.png" in r.getMessage() and "--intensity-range 0,4095" in r.getMessage() for r in caplog.records)
    result = segment.run(str(images), str(tmp_path / "12bit"), str(ckpt), intensity_range=[0, 4095])
    assert result["images"] == 1
    summary = json.loads((tmp_path / "12bit" / "summary.json").read_text())
    assert summary["intensity_range"] == "[0, 4095]"
    labels = np.asarray(Image.open(tmp_path / "12bit" / "masks" / "cam.png"))
    scaled = np.rint(values.astype(float) * 255 / 4095).astype(np.uint8)[..., None]
    preview = np.asarray(Image.open(tmp_path / "12bit" / "previews" / "cam.png"))
    assert (preview == segment.blend(scaled, labels, make_palette())).all()   # the model saw the 0..255 image


# ---------------------------------------------------------------- symlinked folders

def linked_tree(root: Path, elsewhere: Path) -> None:
    """images/: a.png, d.png, sub/b.png, linked -> elsewhere (c.png), other_link -> elsewhere again,
    sub/loop -> images (a loop); masks/ the same, with linked/ a real folder."""
    eight_bit_pairs(root, ["a.png", "d.png", "sub/b.png"])
    save(RNG.integers(0, 256, (16, 16), dtype=np.uint8), elsewhere / "c.png")
    save(mask(seed=9), root / "masks" / "linked" / "c.png")
    (root / "images" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "images" / "other_link").symlink_to(elsewhere, target_is_directory=True)
    (root / "images" / "sub" / "loop").symlink_to(root / "images", target_is_directory=True)


def test_recursive_folder_source_follows_symlinked_folders_once(tmp_path, caplog):
    root = tmp_path / "data"
    linked_tree(root, tmp_path / "elsewhere")
    with caplog.at_level(logging.WARNING, "im_core.data"):
        prepare(dataset(root, layout={"recursive": True}), tmp_path / "d.zarr")
    assert sorted(stored(tmp_path / "d.zarr")) == ["a.png", "d.png", "linked/c.png", "sub/b.png"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(root / "images" / "sub" / "loop") in m and "loop" in m for m in messages)
    assert any(str(root / "images" / "other_link") in m and "listed once" in m for m in messages)


def test_segment_follows_symlinked_folders_and_stops_at_a_loop(tmp_path, caplog):
    images = tmp_path / "in"
    save(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8), images / "a.png")
    save(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8), tmp_path / "elsewhere" / "deep" / "c.png")
    (images / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "deep" / "up").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    ckpt = make_checkpoint(tmp_path / "m.pt")
    with caplog.at_level(logging.WARNING, "im_core.data"):
        result = segment.run(str(images), str(tmp_path / "out"), str(ckpt))
    assert result["images"] == 2
    assert (tmp_path / "out" / "masks" / "linked" / "deep" / "c.png").is_file()
    assert any("linked/deep/up" in r.getMessage() and "loop" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- decompression bombs

def test_image_over_the_pixel_limit_is_named_and_the_limit_can_be_raised(tmp_path, monkeypatch):
    root = tmp_path / "data"
    eight_bit_pairs(root, ["a.png", "b.png", "c.png", "d.png"])   # 16 x 16 = 256 pixels each
    for limit in (200, 100):   # over Pillow's limit (it warns) and over twice it (it fails)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(InputError, match=rf"a\.png: 16 x 16 = 256 pixels, more than the limit of {limit} .*"
                                             r"raise datasets\.d\.max_image_pixels"):
            prepare(dataset(root), tmp_path / "d.zarr")
        assert Image.MAX_IMAGE_PIXELS == limit   # Pillow's setting is left as it was
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with pytest.raises(InputError, match=r"a\.png: .*256 pixels, more than the limit"):
                image_header(root / "images" / "a.png")   # outside a run too
    summary = prepare(dataset(root, max_image_pixels=256), tmp_path / "d.zarr")
    assert summary["images"] == 4


def test_segment_refuses_an_image_over_the_limit_by_name(tmp_path, monkeypatch):
    images = tmp_path / "in"
    save(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8), images / "big.png")
    ckpt = make_checkpoint(tmp_path / "m.pt")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError, match=r"big\.png: 16 x 16 = 256 pixels.*raise --max-image-pixels"):
        segment.run(str(images), str(tmp_path / "out"), str(ckpt))
    assert not (tmp_path / "out").exists()
    assert segment.run(str(images), str(tmp_path / "out"), str(ckpt), max_image_pixels=1000)["images"] == 1
