"""Data: sources of images and masks, the zarr data store built from them, what training reads of
it (the training set, augmentation on whole batches, batches)."""
