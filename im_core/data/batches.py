"""Where training batches come from: the training set as uint8 tensors on the job's device.

`TrainingTensors` holds the images (N x C x H x W), labels and the blocked-input mask of the
pseudo-labeled images; `Batches` draws shuffled epochs of augmented batches from it;
`UnlabeledViews` draws two noised views of random unlabeled images (consistency trainer), or
one flipped batch of them (CCT). No
per-sample Python and no worker processes: every batch is a handful of tensor operations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..settings import Augment, Photometric
from .augment import COPY_NOISE, augment_batch, photometric
from ..errors import InputError


@dataclass
class TrainingTensors:
    images: torch.Tensor   # N x C x H x W uint8
    labels: torch.Tensor   # N x H x W (N x L x H x W multi-label) uint8
    blocked: torch.Tensor  # N x H x W bool: input pixels blacked out inside an IM
    pseudo: torch.Tensor | None = None  # N bool: the pair is pseudo-labeled (default: none is)
    weights: torch.Tensor | None = None  # like labels, uint8: each label's loss weight x 255 (a soft mask)

    def __post_init__(self) -> None:
        if self.pseudo is None:
            self.pseudo = torch.zeros(len(self.images), dtype=torch.bool, device=self.images.device)

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray, blocked: np.ndarray | None = None,
                    device: torch.device | str = "cpu", pseudo: np.ndarray | None = None,
                    weights: np.ndarray | None = None) -> "TrainingTensors":
        """From N x H x W x C uint8 images (as the stores hold them)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        if blocked is None:
            blocked = np.zeros((len(images),) + images.shape[1:3], bool)
        if pseudo is None:
            pseudo = np.zeros(len(images), bool)
        return cls(x.to(device), torch.from_numpy(np.ascontiguousarray(labels)).to(device),
                   torch.from_numpy(np.ascontiguousarray(blocked)).to(device), torch.from_numpy(pseudo).to(device),
                   None if weights is None else torch.from_numpy(np.ascontiguousarray(weights)).to(device))

    def __len__(self) -> int:
        return len(self.images)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.images, self.labels, self.blocked, self.pseudo,
                                                          self.weights) if t is not None)


def with_weights(labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Labels and their weights as one uint8 tensor of channels (N x 2 x H x W, multi-label
    N x 2L x H x W), which the augmentation resamples as it does multi-label labels: nearest,
    so the two stay aligned, and with the same random draws as the labels alone."""
    channels = lambda t: t[:, None] if t.ndim == 3 else t  # noqa: E731
    return torch.cat([channels(labels), channels(weights)], 1)


def without_weights(stacked: torch.Tensor, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`with_weights` undone: the labels and the weights."""
    if multilabel:
        half = stacked.shape[1] // 2
        return stacked[:, :half], stacked[:, half:]
    return stacked[:, 0], stacked[:, 1]


class ShuffledEpochs:
    """Endless shuffled epochs over `indices`, `take` of them at a time (an epoch's short last
    batch is dropped where there are more than `take`). The order and the position are the state."""

    def __init__(self, indices: torch.Tensor, take: int, generator: torch.Generator):
        self.indices, self.take, self.generator = indices, take, generator
        self.drop_last = len(indices) > take
        self.order: torch.Tensor | None = None
        self.position = 0

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.indices)
        return n // self.take if self.drop_last else math.ceil(n / self.take)

    def next(self) -> torch.Tensor:
        if self.order is None or self.position >= self.steps_per_epoch:
            perm = torch.randperm(len(self.indices), generator=self.generator, device=self.indices.device)
            self.order, self.position = self.indices[perm], 0
        pick = self.order[self.position * self.take:(self.position + 1) * self.take]
        self.position += 1
        return pick

    def state(self) -> dict:
        return {"order": None if self.order is None else self.order.cpu(), "position": self.position}

    def load_state(self, state: dict) -> None:
        self.order = None if state["order"] is None else state["order"].to(self.indices.device)
        self.position = state["position"]


class Batches:
    """Endless shuffled epochs of augmented batches (float images, uint8 labels).

    Pooled (`labeled_share` None): ground truth and pseudo-labeled pairs shuffled together.
    With `labeled_share` α, every batch holds round(α x batch) ground-truth pairs and the rest
    pseudo-labeled ones, each set in its own shuffled epochs: α = 1 is GIST/RIST's `L` stage,
    α = 0 their `P` stage, 0 < α < 1 FIST's fixed mix. The pools' positions and the generator
    are the whole state: `state()` taken between two batches and `load_state()` continue with
    exactly the batches that would have followed.
    """

    def __init__(self, data: TrainingTensors, batch_size: int, augment: Augment | None, generator: torch.Generator,
                 pseudo_augment: Photometric | None = None, labeled_share: float | None = None):
        self.data, self.batch_size, self.augment, self.generator = data, batch_size, augment, generator
        self.pseudo_augment = pseudo_augment  # the photometric noise of the pseudo-labeled pairs
        self.pools = self._pools(labeled_share)
        self.last_weights: torch.Tensor | None = None

    def _pools(self, labeled_share: float | None) -> list[ShuffledEpochs]:
        device = self.data.images.device
        if labeled_share is None:
            return [ShuffledEpochs(torch.arange(len(self.data), device=device), self.batch_size, self.generator)]
        n_truth = round(labeled_share * self.batch_size)
        pools = []
        for name, members, take in (("ground-truth", ~self.data.pseudo, n_truth),
                                    ("pseudo-labeled", self.data.pseudo, self.batch_size - n_truth)):
            if take == 0:
                continue
            indices = torch.nonzero(members).flatten()
            if len(indices) == 0:
                raise InputError(f"labeled_share {labeled_share}: {take} {name} pairs per batch, but the training "
                                 f"set has none")
            pools.append(ShuffledEpochs(indices, take, self.generator))
        return pools

    @property
    def steps_per_epoch(self) -> int:
        """Batches until every pair of the pool that takes longest has been seen once."""
        return max(pool.steps_per_epoch for pool in self.pools)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        picks = [pool.next() for pool in self.pools]
        pick = picks[0] if len(picks) == 1 else torch.cat(picks)
        self.last_pseudo = self.data.pseudo[pick]  # which pairs of the batch are pseudo-labeled (DST's loss)
        labels, weights = self.data.labels[pick], self.data.weights
        if weights is not None:  # a soft mask: each label's weight moves with it
            labels = with_weights(labels, weights[pick])
        x, y, _ = augment_batch(self.data.images[pick], labels, self.data.blocked[pick],
                                self.augment, self.generator, self.data.pseudo[pick], self.pseudo_augment)
        if weights is not None:
            y, self.last_weights = without_weights(y, self.data.labels.ndim == 4)
        return x, y

    def state(self) -> dict:
        return {"pools": [pool.state() for pool in self.pools], "generator": self.generator.get_state()}

    def load_state(self, state: dict) -> None:
        for pool, saved in zip(self.pools, state["pools"], strict=True):
            pool.load_state(saved)
        self.generator.set_state(state["generator"])


class UnlabeledViews:
    """Two noised views of random unlabeled images (same flip, so pixels correspond)."""

    def __init__(self, images: np.ndarray, batch_size: int, augment: Augment, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        if len(images) == 0:
            raise InputError("the consistency trainer needs unlabeled images; the data set has none")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
        self.batch_size, self.generator = batch_size, generator
        self.noise = augment if augment.active else augment.with_noise(COPY_NOISE)

    def flipped(self) -> torch.Tensor:
        """A batch of random unlabeled images, each flipped horizontally or not (CCT's unlabeled batch)."""
        device = self.images.device
        pick = torch.randint(len(self.images), (self.batch_size,), generator=self.generator, device=device).sort().values
        x = self.images[pick].float()
        flip = torch.rand(len(x), generator=self.generator, device=device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.flipped()
        return photometric(x, self.noise, self.generator), photometric(x, self.noise, self.generator)
