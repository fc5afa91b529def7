"""Datasets and preprocessing; numpy and Pillow only, so this runs on the device too."""
from edgenet.data.datasets import BUILTIN, SPLITS, Dataset, load_dataset, read_labels, write_labels
from edgenet.data.preprocess import ColorMode, Preprocess

__all__ = ["BUILTIN", "SPLITS", "ColorMode", "Dataset", "Preprocess", "load_dataset", "read_labels",
           "write_labels"]
