"""What a pseudo-label builder is: which teachers it reads, how it gets their predictions, and how
it makes a generation's pseudo-labels from them.

Teacher predictions are stacked as n x N x H x W (multi-class class indices, binary 0/1) or
n x N x C x H x W (multi-label, 0/1 per channel). A builder reads the teachers' stored
predictions (their prediction jobs' `unlabeled/labels` and `unlabeled/confidence`) or, where its
settings need what is not stored (averaged probabilities, a temperature), runs the teachers'
checkpoints again (`reruns`). The pseudo-label store holds, per unlabeled image, the (masked)
input, the labels, `im` (the pixels the builder left out of the labels: the inconsistency mask,
erased or below-threshold pixels) and whether the image is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..settings import PseudoSettings


@dataclass
class PseudoLabels:
    images: np.ndarray       # N x H x W x C uint8, IM pixels black when block_input
    labels: np.ndarray       # N x H x W (N x C x H x W) uint8
    im: np.ndarray           # N x H x W bool: pixels left out of the labels
    im_fraction: np.ndarray  # N float
    keep: np.ndarray         # N bool: False where the class-presence filter dropped the image
    weight: np.ndarray | None = None  # like labels, uint8: each label's loss weight x 255 (soft mask)


def unmasked(labels: np.ndarray, images: np.ndarray) -> PseudoLabels:
    """One prediction as pseudo-labels: every pixel labelled, every image kept."""
    im = np.zeros((len(images),) + images.shape[1:3], bool)
    return PseudoLabels(images.copy(), labels.astype(np.uint8), im, im.reshape(len(im), -1).mean(1),
                        np.ones(len(images), bool))


class Builder:
    """A builder's declaration (class attributes, and methods of its settings) and its build. The
    base is one teacher's hard prediction, unmasked."""
    makes_labels = True           # False: no pseudo-labels (the consistency trainer's 'none')
    per_student = False           # one store per student, from the prediction of the model it continues
    earlier_generations = False   # may read a model of any earlier generation (the best so far)
    reports_mask = False          # `im` marks where the teachers disagree: reported as the IM fraction
    one_model = False             # labels are one model's prediction: Label Erase and temperature apply
    summary = ""
    own_of_others = ("agree", "per_label", "teacher_generations", "soft")  # keys of the im builder that other builders drop

    def resolve(self, section: dict, generation: int) -> dict:
        """The pseudo_labels section in force for `generation` as this builder's job settings
        (the params Snakemake records): the keys of other builders dropped."""
        settings = {k: v for k, v in section.items() if k not in ("ratios", "agreement", *self.own_of_others)}
        return settings

    def uses_top_n(self, settings: PseudoSettings) -> bool:
        """Whether it reads the selection's top `teachers` (which selection.top_k must keep)."""
        return False

    def reruns(self, settings: PseudoSettings) -> bool:
        """Whether it runs the teachers' checkpoints (what it needs is not in their predictions)."""
        return self.one_model and settings.label_erase > 0 and settings.temperature != 1.0

    def needs_confidence(self, settings: PseudoSettings) -> bool:
        """Whether it reads the (first) teacher's stored confidence."""
        return self.one_model and settings.label_erase > 0

    def weighs_pixels(self, settings: PseudoSettings) -> bool:
        """Whether its labels carry loss weights (`PseudoLabels.weight`, from every teacher's
        stored confidence: `build` then gets them all, n x ..., in place of the first one's)."""
        return False

    def masks_input(self, settings: PseudoSettings) -> bool:
        """Whether the left-out pixels' input is blacked out (training then keeps them black)."""
        return False

    def label_mode(self, settings: PseudoSettings) -> str:
        return "ignore"

    def teachers(self, selection: dict, settings: PseudoSettings, parent: str | None, generation: int) -> list[str]:
        """The model ids it reads, from the previous generation's selection (with
        `selection["earlier"]`: the selections of the generations before it that
        `generations_read` names, the most recent first)."""
        return selection["selected"][:1]

    def generations_read(self, settings: PseudoSettings, previous: int) -> list[int]:
        """The generations whose models' predictions generation `previous` + 1's pseudo-labels
        may read (the workflow's inputs): the previous one, or every earlier one for a builder
        that labels with the best model so far."""
        return list(range(previous + 1)) if self.earlier_generations else [previous]

    def selections_read(self, settings: PseudoSettings, previous: int) -> list[int]:
        """The generations before `previous` whose selections `teachers` reads (most recent first)."""
        return []

    def rerun(self, models: list, images: np.ndarray, task: str, num_classes: int, settings: PseudoSettings,
              path) -> tuple[np.ndarray, np.ndarray | None]:
        """The teachers' hard labels (1 x ...) and confidence, computed by running them."""
        raise NotImplementedError(f"{type(self).__name__} reads stored predictions only")

    def prepare(self, teachers, n: int, task: str, num_classes: int, settings: PseudoSettings) -> tuple[dict, object]:
        """A pass over the whole unlabeled split before building (`teachers(rows, images, task,
        n)` -> predictions, confidence): attributes for the store, and what `build` needs of it."""
        return {}, None

    def build(self, preds: np.ndarray, confidence: np.ndarray | None, images: np.ndarray, task: str,
              num_classes: int, ignore: int, settings: PseudoSettings, prepared: object = None) -> PseudoLabels:
        """Pseudo-labels of a chunk of unlabeled images from the teachers' predictions."""
        return unmasked(preds[0], images)

    def problems(self, settings: dict, task: str) -> list[str]:
        """What is wrong with the pseudo_labels section for this builder on data of `task`
        (messages without the key prefix)."""
        return []


class NoPseudoLabels(Builder):
    """'none': the generation has no pseudo-labels (the consistency trainer learns from the
    unlabeled images itself)."""
    makes_labels = False
    summary = "no pseudo-labels (the consistency trainer)"

    def teachers(self, selection, settings, parent, generation):
        raise InputError("pseudo_labels.builder 'none' makes no pseudo-labels")
