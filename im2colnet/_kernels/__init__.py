"""Compiled Cython kernels: one file per kernel family, nogil loops over typed memoryviews.

These functions trust their arguments (shapes, dtypes, index ranges): call them
only through :mod:`im2colnet.functional`, which validates everything first.
"""
