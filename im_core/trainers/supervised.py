"""The supervised trainer: cross-entropy (or DST's dynamic loss) on the labeled images, plus the
generation's pseudo-labeled pairs where the job has them (IM, the baselines, GIST/RIST's stages)."""
from .base import Trainer  # noqa: F401  (the base class is the supervised objective)
