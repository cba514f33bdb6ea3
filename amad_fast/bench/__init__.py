"""Benchmarks: the attention throughput benchmark ``amad-fast bench`` (:mod:`.command`, with its
timing (:mod:`.timing`), cases (:mod:`.cases`), end-to-end model steps (:mod:`.e2e`) and reports
(:mod:`.report`)), and the per-entity detection benchmark ``amad-fast benchmark`` (:mod:`.detection`).
"""
