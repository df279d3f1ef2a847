"""The feature cache: the HDF5 contract between extraction and training.

Nothing here imports :mod:`vafusion.extract` or :mod:`vafusion.fusion`, so a cache can be
read, checked and merged on a machine that has only h5py and numpy.
"""
