"""The model zoo: builders and shipped pretrained weights (HDF5)."""
