"""Data-set loaders (the Anomaly-Transformer ``.npy`` layout, SMD, PSM, SWaT, omi-style CSV pairs),
the ``load_dataset`` spec strings, and multi-entity data sets (``NAME_entities.csv``, SMD machines,
folders of CSV pairs)."""
from __future__ import annotations

import csv
import glob
import os
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from amad_fast.data.csv_reader import load_csv
from amad_fast.data.series import PathLike, SeriesSplit, _positive_int, _require_file, check_labels, check_series
from amad_fast.data.synthetic import make_synthetic


def load_npy(path: PathLike, what: str = "array", mmap_mode: Optional[str] = None) -> np.ndarray:
    """``np.load`` of a .npy array without pickles; a file that is not one (truncated, text, an
    object array, empty) is a ValueError that names the path and ``what`` it should hold. A missing
    or unreadable file keeps its OSError (whose message names the path)."""
    p = os.fspath(path)
    try:
        arr = np.load(p, mmap_mode=mmap_mode, allow_pickle=False)
    except OSError as exc:
        if exc.filename is not None:  # the OS refused the path itself
            raise
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{p}: not a valid .npy array ({what}): {type(exc).__name__}: {reason}") from None
    except Exception as exc:  # ValueError, EOFError, UnpicklingError: damage of some kind
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{p}: not a valid .npy array ({what}): {type(exc).__name__}: {reason}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise ValueError(f"{p}: expected a .npy array ({what}), got a {type(arr).__name__} (an .npz archive?)")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{p}: expected a numeric .npy array ({what}), got dtype {arr.dtype}")
    return arr



def _make_split(name: str, train: Any, test: Any, test_labels: Any, nan_policy: str,
                **extra: Any) -> SeriesSplit:
    """Validate the three arrays together (shapes, channels, label length) and build the split."""
    tr = check_series(train, f"{name} train", nan_policy=nan_policy)
    te = check_series(test, f"{name} test", expected_channels=tr.shape[1], nan_policy=nan_policy)
    lab = None if test_labels is None else check_labels(test_labels, f"{name} test labels", te.shape[0],
                                                        "the test series")
    tl = extra.pop("train_labels", None)
    if tl is not None:
        tl = check_labels(tl, f"{name} train labels", tr.shape[0], "the train series")
    return SeriesSplit(train=tr, test=te, test_labels=lab, name=name, train_labels=tl, **extra)


def load_anomaly_transformer(root: PathLike, name: Optional[str] = None,
                             nan_policy: str = "interpolate") -> SeriesSplit:
    """Load ``root/NAME_train.npy``, ``NAME_test.npy`` and ``NAME_test_label.npy`` (optional).

    This is the layout Anomaly Transformer's loaders read (SMAP, MSL, and its SMD/PSM/SWaT files).
    ``name`` defaults to the single ``*_train.npy`` prefix found in ``root``. NaN/Inf follow
    ``nan_policy`` (see :func:`check_series`).
    """
    root = os.fspath(root)
    if name is None:
        found = sorted(os.path.basename(p)[: -len("_train.npy")]
                       for p in glob.glob(os.path.join(root, "*_train.npy")))
        if len(found) != 1:
            raise ValueError(f"name: expected exactly one NAME_train.npy in {root!r} to infer the name, "
                             f"got {found}; pass name=")
        name = found[0]
    train = load_npy(_require_file(os.path.join(root, f"{name}_train.npy"), "train"), f"{name} train")
    test = load_npy(_require_file(os.path.join(root, f"{name}_test.npy"), "test"), f"{name} test")
    lp = os.path.join(root, f"{name}_test_label.npy")
    labels = load_npy(lp, f"{name} test labels") if os.path.isfile(lp) else None
    return _make_split(name, train, test, labels, nan_policy, info={"root": root, "layout": "anomaly_transformer"})


def _natural_key(s: str) -> List[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def load_smd(root: PathLike, machine: Union[None, str, Sequence[str]] = "machine-1-1",
             nan_policy: str = "interpolate") -> SeriesSplit:
    """Load SMD (Server Machine Dataset) in its published OmniAnomaly layout.

    Reads ``root/train/M.txt``, ``root/test/M.txt`` and ``root/test_label/M.txt`` (comma-separated,
    no header, 38 columns; labels one 0/1 per line) for one machine ``M`` (e.g. ``"machine-1-1"``),
    a list of machines, or ``None`` for all machines found in ``root/train``; several machines are
    concatenated in natural order (machine-1-1, machine-1-2, …, machine-3-11), which is how the
    Anomaly-Transformer ``SMD_*.npy`` files were made. The interpretation labels are not read.
    """
    root = os.fspath(root)
    if machine is None:
        machines = sorted((os.path.basename(p)[:-4] for p in glob.glob(os.path.join(root, "train", "*.txt"))),
                          key=_natural_key)
        if not machines:
            raise FileNotFoundError(f"root: expected SMD text files in {os.path.join(root, 'train')!r}, found none")
    elif isinstance(machine, str):
        machines = [machine]
    else:
        machines = list(machine)
    parts: Dict[str, List[np.ndarray]] = {"train": [], "test": [], "test_label": []}
    for m in machines:
        for sub in parts:
            path = _require_file(os.path.join(root, sub, f"{m}.txt"), f"SMD {sub} of {m}")
            arr = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2 if sub != "test_label" else 1)
            parts[sub].append(arr.reshape(-1) if sub == "test_label" else arr)
    name = "SMD" if len(machines) != 1 else f"SMD/{machines[0]}"
    return _make_split(name, np.concatenate(parts["train"]), np.concatenate(parts["test"]),
                       np.concatenate(parts["test_label"]), nan_policy,
                       info={"root": root, "layout": "smd_omnianomaly", "machines": machines})


def load_psm(root: PathLike, nan_policy: str = "interpolate") -> SeriesSplit:
    """Load PSM (Pooled Server Metrics, eBay) in its published layout.

    ``root/train.csv`` and ``root/test.csv``: header row, first column ``timestamp_(min)`` (dropped),
    25 feature columns; ``root/test_label.csv``: ``timestamp_(min),label``. The training file has
    missing values; they follow ``nan_policy`` (Anomaly Transformer replaced them by 0 instead).
    """
    root = os.fspath(root)
    tr = load_csv(_require_file(os.path.join(root, "train.csv"), "PSM train"), index_column=0,
                  nan_policy=nan_policy, name="PSM train")
    te = load_csv(_require_file(os.path.join(root, "test.csv"), "PSM test"), index_column=0,
                  nan_policy=nan_policy, name="PSM test")
    lab = load_csv(_require_file(os.path.join(root, "test_label.csv"), "PSM test_label"), index_column=0,
                   label_column=-1, name="PSM test_label", allow_no_values=True)
    return _make_split("PSM", tr.values, te.values, lab.labels, nan_policy, channel_names=tr.columns,
                       info={"root": root, "layout": "psm"})


_SWAT_LAYOUTS = (
    # (train file, test file, label column, description)
    ("SWaT_Dataset_Normal_v1.csv", "SWaT_Dataset_Attack_v0.csv", "Normal/Attack", "iTrust xlsx exported to CSV"),
    ("swat_train2.csv", "swat2.csv", -1, "DCdetector / TimesNet-style preprocessed CSVs"),
)


def load_swat(root: PathLike, nan_policy: str = "interpolate") -> SeriesSplit:
    """Load SWaT (Secure Water Treatment, iTrust) from one of two CSV layouts found in public code.

    1. ``SWaT_Dataset_Normal_v1.csv`` / ``SWaT_Dataset_Attack_v0.csv``: the iTrust 2015 spreadsheets
       exported to CSV (as USAD's notebooks use them). Lines before the header (the header is the
       first line containing ``Normal/Attack``) are skipped, the non-numeric ``Timestamp`` column is
       dropped, labels are the ``Normal/Attack`` column (``Normal`` → 0, ``Attack``/``A ttack`` → 1).
    2. ``swat_train2.csv`` / ``swat2.csv`` (as DCdetector's loader reads them): header row, feature
       columns, last column the label (0/1 or Normal/Attack).

    The Anomaly-Transformer ``SWaT_*.npy`` files load with :func:`load_anomaly_transformer`.
    Not done here (papers differ): dropping the first hours of the normal run, down-sampling.
    The raw xlsx files are not read (no spreadsheet dependency); export them to CSV first.
    """
    root = os.fspath(root)
    for train_f, test_f, label_col, desc in _SWAT_LAYOUTS:
        trp, tep = os.path.join(root, train_f), os.path.join(root, test_f)
        if os.path.isfile(trp) and os.path.isfile(tep):
            tr = load_csv(trp, label_column=label_col, nan_policy=nan_policy, name="SWaT train")
            te = load_csv(tep, label_column=label_col, nan_policy=nan_policy, name="SWaT test")
            if tr.columns != te.columns:
                raise ValueError(f"SWaT: expected the same columns in {train_f} and {test_f}, got "
                                 f"{len(tr.columns)} and {len(te.columns)} that differ")
            return _make_split("SWaT", tr.values, te.values, te.labels, nan_policy, channel_names=tr.columns,
                               train_labels=tr.labels,
                               info={"root": root, "layout": desc, "dropped_columns": tr.dropped})
    wanted = " or ".join(f"{a} + {b}" for a, b, _, _ in _SWAT_LAYOUTS)
    raise FileNotFoundError(f"root: expected {wanted} in {root!r}, found neither pair")


# ---- generic CSV ---------------------------------------------------------------------------------
def load_omi(root: PathLike, name: str = "omi-1", nan_policy: str = "interpolate") -> SeriesSplit:
    """Load an ASD/omi-style pair ``root/NAME_train.csv``, ``root/NAME_test.csv``.

    Both files: a header row, value columns, optionally a ``label`` column (0/1 per row; the
    training part of omi-1 is all 0) and index or time columns, which are recognised by name and
    content (see :func:`load_csv`), not by position. The training labels, when there are any, are
    kept in ``train_labels``; which columns are used and which ignored is ``info["columns"]``.
    """
    root = os.fspath(root)
    kw = dict(label_column="label", label_optional=True, nan_policy=nan_policy)
    tr = load_csv(_require_file(os.path.join(root, f"{name}_train.csv"), f"{name} train"), name=f"{name}_train.csv", **kw)
    te = load_csv(_require_file(os.path.join(root, f"{name}_test.csv"), f"{name} test"), name=f"{name}_test.csv", **kw)
    if tr.columns != te.columns:
        raise ValueError(f"{name}: expected the same value columns in {name}_train.csv and {name}_test.csv, "
                         f"got {tr.columns} and {te.columns} ({tr.describe()} / {te.describe()})")
    return _make_split(name, tr.values, te.values, te.labels, nan_policy, channel_names=tr.columns,
                       train_labels=tr.labels, info={"root": root, "layout": "omi_csv", "columns": tr.describe()})


def load_series_csv(path: PathLike, nan_policy: str = "interpolate") -> SeriesSplit:
    """One CSV of one series (e.g. a record of normal operation) as a data set: the series is both
    ``train`` and ``test`` (fit on it, or score it with a saved detector); a ``label`` column, when
    there is one, gives ``test_labels`` and ``train_labels``. Columns as :func:`load_csv` decides
    (index and time columns by name and content, text ignored); ``info["columns"]`` says which.
    """
    path = os.fspath(path)
    base = os.path.basename(path)
    d = load_csv(path, label_column="label", label_optional=True, nan_policy=nan_policy, name=base)
    stem = base[:-len(".csv")] if base.lower().endswith(".csv") else base
    return _make_split(stem, d.values, d.values, d.labels, nan_policy, channel_names=d.columns, train_labels=d.labels,
                       info={"path": path, "layout": "csv_file", "columns": d.describe()})


def _parse_kwargs(text: str) -> Dict[str, Any]:
    """'length=2000,seed=3,kinds=point+trend' -> dict with ints/floats/tuples parsed."""
    out: Dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in item:
            raise ValueError(f"spec: expected key=value items after ':', got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if "+" in v:
            out[k] = tuple(v.split("+"))
            continue
        for conv in (int, float):
            try:
                out[k] = conv(v)
                break
            except ValueError:
                continue
        else:
            out[k] = v
    return out


def load_dataset(spec: PathLike, data_root: Optional[PathLike] = None, entity: Optional[str] = None,
                 **kwargs: Any) -> SeriesSplit:
    """Load a data set, or one entity of it, from a short spec (what the CLI passes).

    * ``"synthetic"`` or ``"synthetic:length=20000,channels=8,seed=0,kinds=point+trend"``:
      :func:`make_synthetic` (extra ``kwargs`` go to it too); ``entities=K`` in the spec makes K
      entities ``synthetic-0`` … (seeds seed … seed + K − 1), each its own series.
    * a directory holding ``NAME_train.npy`` (Anomaly-Transformer layout), ``NAME_train.csv`` +
      ``NAME_test.csv`` (omi style), ``train.csv`` + ``test.csv`` + ``test_label.csv`` (PSM),
      ``train/`` + ``test/`` + ``test_label/`` (SMD; pass ``machine=``), or a SWaT CSV pair;
    * a file ``…/NAME_train.npy`` or ``…/NAME_train.csv`` (the directory and NAME are taken from it);
    * a bare name such as ``"SMAP"``, looked up as a directory under ``data_root`` and then under each
      entry of the ``AMAD_DATA`` environment variable (``os.pathsep``-separated).

    ``entity`` picks one entity of a multi-entity data set (see :func:`list_entities`): its own
    train, test and labels. Without it a multi-entity set in the Anomaly-Transformer layout loads
    concatenated, as published papers evaluate it. ``kwargs`` are passed to the chosen loader.
    """
    source = _locate(spec, data_root)
    if entity is None:
        return source.load_all(**kwargs)
    return source.load_entity(str(entity), **kwargs)


def list_entities(spec: PathLike, data_root: Optional[PathLike] = None) -> List[str]:
    """Names of the entities of a data set, in their natural order.

    Entities are the independent series a multi-entity data set is made of, each to be trained,
    scored and evaluated on its own: the rows of ``NAME_entities.csv`` beside an
    Anomaly-Transformer ``NAME_train.npy`` (columns ``entity,train_start,train_end,test_start,
    test_end``, half-open row ranges; SMAP ships one), SMD's ``machine-*.txt`` files, the
    ``NAME_train.csv``/``NAME_test.csv`` pairs of a folder of per-entity CSVs, or the K series of
    ``synthetic:entities=K``. A data set without such structure is one entity: its own name.
    """
    return _locate(spec, data_root).entity_names()


def iter_entities(spec: PathLike, data_root: Optional[PathLike] = None,
                  entities: Optional[Sequence[str]] = None, **kwargs: Any) -> Iterator[SeriesSplit]:
    """Yield each entity of a data set as its own :class:`SeriesSplit` (``entities`` restricts
    and orders them; unknown names are refused before anything loads). Shared arrays (the
    concatenated ``.npy`` files) are read once, not once per entity."""
    source = _locate(spec, data_root)
    names = source.entity_names()
    if entities is not None:
        wanted = [str(e) for e in entities]
        for e in wanted:
            source.check_entity(e, names)
        names = wanted
    return source.iter_entities(names, **kwargs)


ENTITY_TABLE_SUFFIX = "_entities.csv"
_ENTITY_COLUMNS = ("entity", "train_start", "train_end", "test_start", "test_end")


class _EntityRows(NamedTuple):
    name: str
    train: Tuple[int, int]
    test: Tuple[int, int]


def read_entity_table(path: PathLike, n_train: int, n_test: int) -> List[_EntityRows]:
    """Parse and check an entity table (``NAME_entities.csv``) against the arrays it indexes.

    Every row needs an entity name (unique) and half-open ranges ``0 <= start < end <= n`` of the
    training (``n_train`` rows) and test (``n_test`` rows) arrays; other columns are ignored.
    Errors name the file, the line and the column.
    """
    path = os.fspath(path)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: expected an entity table with header {','.join(_ENTITY_COLUMNS)}, got an empty file")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in _ENTITY_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: expected the columns {list(_ENTITY_COLUMNS)} in its header (line 1), "
                         f"missing {missing}; got {rows[0]}")
    col = {c: header.index(c) for c in _ENTITY_COLUMNS}
    out: List[_EntityRows] = []
    seen: Dict[str, int] = {}
    for line, r in enumerate(rows[1:], start=2):
        if not any(t.strip() for t in r):
            continue
        if len(r) < len(header):
            raise ValueError(f"{path}, line {line}: expected {len(header)} fields, got {len(r)}")
        name = r[col["entity"]].strip()
        if not name:
            raise ValueError(f"{path}, line {line}, column 'entity': expected a name, got an empty field")
        if name in seen:
            raise ValueError(f"{path}, line {line}, column 'entity': {name!r} already named on line {seen[name]}")
        seen[name] = line
        bounds = {}
        for c in _ENTITY_COLUMNS[1:]:
            tok = r[col[c]].strip()
            try:
                bounds[c] = int(tok)
            except ValueError:
                raise ValueError(f"{path}, line {line}, column {c!r}: expected an integer row index, got {tok!r}") from None
        for part, n in (("train", n_train), ("test", n_test)):
            a, b = bounds[f"{part}_start"], bounds[f"{part}_end"]
            if not 0 <= a < b <= n:
                raise ValueError(f"{path}, line {line}: expected 0 <= {part}_start < {part}_end <= {n} "
                                 f"(the rows of the {part} array), got {part}_start={a}, {part}_end={b}")
        out.append(_EntityRows(name, (bounds["train_start"], bounds["train_end"]),
                               (bounds["test_start"], bounds["test_end"])))
    if not out:
        raise ValueError(f"{path}: expected at least one entity row after the header, got none")
    return out


class _Source:
    """A located data set: what its entities are and how to load all of it or one of them."""

    def __init__(self, kind: str, where: str, name: Optional[str] = None, params: Optional[Dict[str, Any]] = None):
        self.kind, self.where, self.name, self.params = kind, where, name, dict(params or {})

    # -- entity names ------------------------------------------------------------------------
    def entity_names(self) -> List[str]:
        if self.kind == "synthetic":
            k = self.params.get("entities")
            base = self.params.get("name", "synthetic")
            return [base] if k is None else [f"{base}-{i}" for i in range(_positive_int(k, "entities"))]
        if self.kind == "npy":
            if self.name is None:
                raise ValueError(f"spec: {self.where!r} holds several NAME_train.npy files; give the file "
                                 f"NAME_train.npy itself to say which")
            if self._table_path() is None:
                return [self.name]
            return [r.name for r in self._entity_table()]
        if self.kind == "smd":
            names = sorted((os.path.basename(p)[:-4] for p in glob.glob(os.path.join(self.where, "train", "*.txt"))),
                           key=_natural_key)
            if not names:
                raise FileNotFoundError(f"spec: expected SMD text files in {os.path.join(self.where, 'train')!r}, found none")
            return names
        if self.kind == "csv_pairs":
            return self._csv_names()
        return [self.load_all().name]

    def check_entity(self, entity: str, names: Optional[List[str]] = None) -> None:
        names = self.entity_names() if names is None else names
        if entity not in names:
            shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
            raise ValueError(f"entity: expected one of the entities of {self.where!r} ({shown}), got {entity!r}")

    # -- loading -----------------------------------------------------------------------------
    def load_all(self, **kwargs: Any) -> SeriesSplit:
        if self.kind == "synthetic":
            params = {k: v for k, v in self.params.items() if k != "entities"}
            params.update(kwargs)
            if self.params.get("entities") is not None:
                raise ValueError("entity: a synthetic spec with entities=K has no single series; pass entity= "
                                 "or iterate over the entities")
            return make_synthetic(**params)
        if self.kind == "npy":
            return load_anomaly_transformer(self.where, name=kwargs.pop("name", self.name), **kwargs)
        if self.kind == "smd":
            return load_smd(self.where, **kwargs)
        if self.kind == "psm":
            return load_psm(self.where, **kwargs)
        if self.kind == "swat":
            return load_swat(self.where, **kwargs)
        if self.kind == "csv_file":
            return load_series_csv(self.where, **kwargs)
        if self.kind == "csv_pairs":
            names = self._csv_names()
            base = os.path.basename(os.path.normpath(self.where))
            name = kwargs.pop("name", self.name or (base if base in names else (names[0] if len(names) == 1 else None)))
            if name is None:
                raise ValueError(f"spec: {self.where!r} holds several NAME_train.csv files {names}; pass entity= "
                                 f"(or name=), or iterate over its entities")
            return load_omi(self.where, name=name, **kwargs)
        raise AssertionError(self.kind)  # pragma: no cover

    def load_entity(self, entity: str, **kwargs: Any) -> SeriesSplit:
        return next(self.iter_entities([entity], **kwargs))

    def iter_entities(self, names: Sequence[str], **kwargs: Any) -> Iterator[SeriesSplit]:
        """The entities ``names`` in that order, each with ``info["entity"]`` set to its name."""
        all_names = self.entity_names()
        for e in names:
            self.check_entity(e, all_names)
        for e, split in zip(names, self._load_entities(names, all_names, **kwargs)):
            split.info["entity"] = e
            yield split

    def _load_entities(self, names: Sequence[str], all_names: List[str], **kwargs: Any) -> Iterator[SeriesSplit]:
        if self.kind == "synthetic":
            if self.params.get("entities") is None:
                yield self.load_all(**kwargs)
                return
            params = {k: v for k, v in self.params.items() if k != "entities"}
            params.update(kwargs)
            seed = int(params.pop("seed", 0))
            for e in names:
                i = all_names.index(e)
                yield make_synthetic(**{**params, "seed": seed + i, "name": e})
            return
        if self.kind == "npy" and self._table_path() is not None:
            table = {r.name: r for r in self._entity_table()}
            whole = self.load_all(**kwargs)
            for e in names:
                r = table[e]
                (a, b), (c, d) = r.train, r.test
                yield SeriesSplit(train=whole.train[a:b], test=whole.test[c:d],
                                  test_labels=None if whole.test_labels is None else whole.test_labels[c:d],
                                  name=f"{whole.name}/{e}", channel_names=whole.channel_names,
                                  info={**whole.info, "entity": e, "train_rows": [a, b], "test_rows": [c, d]})
            return
        if self.kind == "smd":
            if "machine" in kwargs:
                raise ValueError("machine: pass entity= (an SMD machine) or machine=, not both")
            for e in names:
                yield load_smd(self.where, machine=e, **kwargs)
            return
        if self.kind == "csv_pairs":
            for e in names:
                yield load_omi(self.where, name=e, **kwargs)
            return
        for _ in names:  # a single-entity data set
            yield self.load_all(**kwargs)

    # -- helpers -----------------------------------------------------------------------------
    def _table_path(self) -> Optional[str]:
        p = os.path.join(self.where, f"{self.name}{ENTITY_TABLE_SUFFIX}")
        return p if os.path.isfile(p) else None

    def _entity_table(self) -> List[_EntityRows]:
        """The checked entity table; the arrays' row counts come from their headers (memory-mapped)."""
        n = [load_npy(_require_file(os.path.join(self.where, f"{self.name}_{part}.npy"), part), part, mmap_mode="r").shape[0]
             for part in ("train", "test")]
        return read_entity_table(self._table_path(), n[0], n[1])

    def _csv_names(self) -> List[str]:
        csvs = sorted(glob.glob(os.path.join(self.where, "*_train.csv")), key=_natural_key)
        return [os.path.basename(p)[: -len("_train.csv")] for p in csvs]


def _locate(spec: PathLike, data_root: Optional[PathLike]) -> _Source:
    """Find what a spec names (see :func:`load_dataset`) without loading its arrays."""
    s = os.fspath(spec)
    if s == "synthetic" or s.startswith("synthetic:"):
        return _Source("synthetic", s, params=_parse_kwargs(s.split(":", 1)[1]) if ":" in s else {})
    if os.path.isfile(s):
        d, base = os.path.split(os.path.abspath(s))
        for suffix, kind in (("_train.npy", "npy"), ("_train.csv", "csv_pairs")):
            if base.endswith(suffix):
                if kind == "csv_pairs" and not os.path.isfile(os.path.join(d, base[: -len(suffix)] + "_test.csv")):
                    break  # no NAME_test.csv beside it: one series file
                return _Source(kind, d, name=base[: -len(suffix)])
        else:
            if not base.lower().endswith(".csv"):
                raise ValueError(f"spec: expected a .csv series file, a NAME_train.npy or a NAME_train.csv file, "
                                 f"got {s!r}")
        return _Source("csv_file", os.path.abspath(s), name=base)
    if os.path.isdir(s):
        return _locate_dir(s)
    roots = [os.fspath(data_root)] if data_root is not None else []
    roots += [r for r in os.environ.get("AMAD_DATA", "").split(os.pathsep) if r]
    for r in roots:
        cand = os.path.join(r, s)
        if os.path.isdir(cand):
            return _locate_dir(cand)
    raise FileNotFoundError(f"spec: expected 'synthetic[:k=v,...]', a data directory or file, or a name under "
                            f"data_root / $AMAD_DATA; got {s!r} (searched {roots or 'no roots'})")


def _locate_dir(d: str) -> _Source:
    base = os.path.basename(os.path.normpath(d))
    npy = sorted(glob.glob(os.path.join(d, "*_train.npy")))
    if npy:
        names = [os.path.basename(p)[: -len("_train.npy")] for p in npy]
        # several NAME_train.npy and none named like the folder: load_all asks for name=
        return _Source("npy", d, name=base if base in names else (names[0] if len(names) == 1 else None))
    if all(os.path.isdir(os.path.join(d, sub)) for sub in ("train", "test", "test_label")):
        return _Source("smd", d)
    if all(os.path.isfile(os.path.join(d, f)) for f in ("train.csv", "test.csv", "test_label.csv")):
        return _Source("psm", d)
    if any(os.path.isfile(os.path.join(d, a)) for a, _, _, _ in _SWAT_LAYOUTS):
        return _Source("swat", d)
    if glob.glob(os.path.join(d, "*_train.csv")):
        return _Source("csv_pairs", d)
    raise ValueError(f"spec: expected a known layout in {d!r} (NAME_train.npy, NAME_train.csv, PSM, SMD or "
                     f"SWaT files), found none")
