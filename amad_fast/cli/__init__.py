"""``amad-fast``, the command line: :func:`main` and its parser (:mod:`.main`), the subcommands
(:mod:`.commands`), their shared options (:mod:`.options`) and what they read and write (:mod:`.outputs`).
"""
from amad_fast.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
