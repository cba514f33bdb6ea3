"""Benchmarks. ``amad-fast bench``, the throughput of the attention op and of the AMAD model, is
:mod:`.command` (options, defaults, one JSON result) built from :mod:`.timing` (how one call is
timed and its memory measured, the machine facts), :mod:`.cases` (what is timed: shapes, cases,
their byte traffic, the sweep), :mod:`.e2e` (the model's training step and scoring pass) and
:mod:`.report` (method notes, tables, markdown, plot). ``amad-fast benchmark``, the per-entity
detection benchmark, is :mod:`.detection`.

The submodules are imported on use: importing this package loads nothing heavy.
"""
