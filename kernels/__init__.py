"""Fused Triton kernels of amad_fast, installed as ``amad_fast.kernels``.

The sources live in the repository's top-level ``kernels/`` folder (``amad_fast/kernels`` is a
link to it, so a source checkout imports them too). Importing this package does not import
Triton; each kernel module does, when it is first used.
"""
