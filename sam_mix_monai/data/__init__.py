"""Data stage: reading CT, phantoms, conversion to the HDF5 slice store, and the dataset adapter."""

from sam_mix_monai.data.dataset import SliceDataset, SliceTable, select_labelled
from sam_mix_monai.data.h5store import SPLIT_NAMES, CaseSlices, SliceStoreWriter, read_attrs
from sam_mix_monai.data.io import read_volume

__all__ = ["SPLIT_NAMES", "CaseSlices", "SliceDataset", "SliceStoreWriter", "SliceTable", "read_attrs",
           "read_volume", "select_labelled"]
