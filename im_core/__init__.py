"""Inconsistency-Mask self-training for semantic segmentation: the steps of the workflow."""
import warnings

# Snakemake drops a .snakemake_timestamp file into directory outputs such as our zarr stores;
# zarr warns about the unknown object when listing a group. It is harmless.
warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")

__version__ = "0.1.0"
