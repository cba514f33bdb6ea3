"""Backends of AutoMask attention, each behind the contract in :mod:`amad_fast.attention.backends.base`."""
