"""Fused Triton kernels of amad_fast, installed as ``amad_fast.kernels``.

The sources live in the repository's top-level ``kernels/`` folder (``amad_fast/kernels`` is a
link to it, so a source checkout imports them too). Importing this package does not import
Triton: :mod:`.limits` (what the kernels take) never does, and the op (:mod:`.automask`, with
:mod:`.tiles`, :mod:`.forward`, :mod:`.backward` and :mod:`.launch`) does when it is first used.
"""
