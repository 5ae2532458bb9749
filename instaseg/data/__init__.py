"""Datasets, format readers and writers, transforms and loaders.

Datasets yield (uint8 image [3, H, W], Instances); transforms take and return that pair;
collate returns lists because images differ in size.
"""

from instaseg.data.dataset import Annotation, ImageRecord, InstanceDataset
from instaseg.data.errors import DataError, DataWarning
from instaseg.data.image_io import read_image, read_image_size

__all__ = [
    "Annotation",
    "DataError",
    "DataWarning",
    "ImageRecord",
    "InstanceDataset",
    "read_image",
    "read_image_size",
]
