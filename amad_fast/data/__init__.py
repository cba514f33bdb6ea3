"""Data: series containers and input checks, standardisation and windowing (:mod:`.series`), data-set
loaders and multi-entity sets (:mod:`.datasets`), strict CSV reading (:mod:`.csv_reader`) and the
built-in synthetic benchmark (:mod:`.synthetic`). numpy only: nothing here imports torch.

Every loader returns a :class:`SeriesSplit` (train, test, test labels; time on axis 0, channels on
axis 1). :func:`load_dataset` takes a spec string (``synthetic[:k=v,...]``, a folder, a file, a name
under a data root); :func:`list_entities` / :func:`iter_entities` walk multi-entity data sets.
"""
from amad_fast.data.csv_reader import load_csv
from amad_fast.data.datasets import (
    iter_entities,
    list_entities,
    load_anomaly_transformer,
    load_dataset,
    load_npy,
    load_omi,
    load_psm,
    load_series_csv,
    load_smd,
    load_swat,
    read_entity_table,
)
from amad_fast.data.series import (
    BINARY_SCALINGS,
    Z_LIMIT,
    CSVData,
    Segment,
    SeriesSplit,
    Standardizer,
    check_labels,
    check_series,
    describe_columns,
    sliding_windows,
    window_starts,
    windows_to_series,
)
from amad_fast.data.synthetic import ANOMALY_KINDS, make_synthetic

__all__ = [
    "SeriesSplit",
    "Segment",
    "CSVData",
    "check_series",
    "check_labels",
    "Standardizer",
    "BINARY_SCALINGS",
    "Z_LIMIT",
    "window_starts",
    "sliding_windows",
    "windows_to_series",
    "load_anomaly_transformer",
    "load_smd",
    "load_psm",
    "load_swat",
    "load_csv",
    "load_npy",
    "load_omi",
    "load_series_csv",
    "describe_columns",
    "load_dataset",
    "list_entities",
    "iter_entities",
    "read_entity_table",
    "make_synthetic",
    "ANOMALY_KINDS",
]
