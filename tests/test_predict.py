"""Prediction stores: hard labels and the confidence of each, from one pass of the model."""
import numpy as np
import torch
from conftest import TRAIN_SETTINGS, replace

from im_core.models.checkpoints import load_checkpoint
from im_core.models.inference import predict_probabilities
from im_core.steps import predict, train
from im_core.io import open_store
from im_core.models.losses import confidence, discretize


def test_confidence_is_the_probability_of_the_predicted_label():
    logits = torch.tensor([[[[2.0]], [[0.0]], [[-1.0]], [[5.0]]]])  # 3 classes + an IM channel
    p = logits.softmax(1)[0, :, 0, 0]
    assert discretize(logits, "multiclass", 3).item() == 0
    assert confidence(logits, "multiclass", 3).item() == round(255 * p[0].item())  # the IM channel is not a label
    binary = torch.tensor([[[[-2.0, 0.0, 3.0]]]])
    sig = binary.sigmoid()[0, 0, 0]
    assert confidence(binary, "binary", 2)[0, 0].tolist() == [round(255 * max(q, 1 - q)) for q in sig.tolist()]
    multilabel = torch.tensor([[[[1.0]], [[-4.0]]]])
    assert confidence(multilabel, "multilabel", 2).shape == (1, 2, 1, 1)


def test_prediction_store_keeps_confidence_beside_the_labels(store, tmp_path):
    settings = replace(TRAIN_SETTINGS, precision="fp32", channels_last=False)
    train.run(str(store), str(tmp_path / "m.pt"), settings, progress=False)
    predict.run(str(tmp_path / "m.pt"), str(store), str(tmp_path / "p.zarr"), ["val", "unlabeled"])
    pred, data = open_store(tmp_path / "p.zarr"), open_store(store)
    model, _ = load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    for split in ("val", "unlabeled"):
        labels, conf = pred[f"{split}/labels"][:], pred[f"{split}/confidence"][:]
        assert conf.dtype == np.uint8 and conf.shape == labels.shape
        images = data["images"].get_orthogonal_selection((pred[f"{split}/index"][:],))
        probs = predict_probabilities(model, images, "multiclass")
        expected = np.round(255 * np.take_along_axis(probs, labels[:, None].astype(np.int64), 1)[:, 0])
        assert np.abs(conf.astype(int) - expected).max() <= 1
    assert "confidence" in pred.attrs
