import pytest
import torch
from conftest import TRAIN_SETTINGS

from im_core import predict, pseudo, selection, train
from im_core.io import open_store, write_json

SETTINGS = TRAIN_SETTINGS


@pytest.mark.parametrize("label_mode, extra", [("ignore", 0), ("im_class", 1)])
def test_students_train_on_im_pseudo_labels(store, tmp_path, label_mode, extra):
    preds = []
    for i in range(2):
        train.run(str(store), str(tmp_path / f"t{i}.pt"), dict(SETTINGS, seed=i), model_id=f"gen0_m{i}", progress=False)
        predict.run(str(tmp_path / f"t{i}.pt"), str(store), str(tmp_path / f"p{i}.zarr"), ["val", "test", "unlabeled"])
        preds.append(str(tmp_path / f"p{i}.zarr"))
    write_json(tmp_path / "s0.json", {"model_id": "gen0_m0", "val": {"miou": 0.5}})
    write_json(tmp_path / "s1.json", {"model_id": "gen0_m1", "val": {"miou": 0.6}})
    sel = selection.run([str(tmp_path / "s0.json"), str(tmp_path / "s1.json")], str(tmp_path / "sel.json"),
                        {"metric": "miou", "top_k": 2}, 0)
    assert sel["ranking"] == ["gen0_m1", "gen0_m0"]
    settings = {"builder": "im", "teachers": 2, "block_input": True, "block_output": True, "label_mode": label_mode,
                "erode": 0, "dilate": 0, "filter_class_disagreement": False}
    pseudo.run(str(store), str(tmp_path / "sel.json"), preds, str(tmp_path / "pseudo.zarr"), settings, 1)
    pl = open_store(tmp_path / "pseudo.zarr")
    assert pl.attrs["teachers"] == ["gen0_m1", "gen0_m0"] and pl.attrs["label_mode"] == label_mode
    result = train.run(str(store), str(tmp_path / "student.pt"), SETTINGS, pseudo=str(tmp_path / "pseudo.zarr"),
                       model_id="gen1_m0", generation=1, progress=False)
    ckpt = torch.load(tmp_path / "student.pt", weights_only=False)
    assert ckpt["model_args"]["out_channels"] == 6 + extra
    assert ckpt["generation"] == 1 and 0.0 <= result["best_val_miou"] <= 1.0
    predict.run(str(tmp_path / "student.pt"), str(store), str(tmp_path / "ps.zarr"), ["test"])
    assert open_store(tmp_path / "ps.zarr")["test/labels"][:].max() < 6  # never the IM class


def test_training_is_reproducible_with_a_seed(store, tmp_path):
    a = train.run(str(store), str(tmp_path / "a.pt"), SETTINGS, progress=False)
    b = train.run(str(store), str(tmp_path / "b.pt"), SETTINGS, progress=False)
    wa = torch.load(tmp_path / "a.pt", weights_only=False)["state_dict"]
    wb = torch.load(tmp_path / "b.pt", weights_only=False)["state_dict"]
    assert a["best_val_miou"] == b["best_val_miou"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
