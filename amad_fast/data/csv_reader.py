"""Strict CSV reading: any CSV of numbers, with index, timestamp, text and label columns recognised by
name and content (never by position), and file, line and column named in every error."""
from __future__ import annotations

import csv
import io
import os
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from amad_fast.data.series import CSVData, PathLike, _require_file, check_labels, check_series, describe_columns

_LABEL_WORDS = {"normal": 0, "attack": 1, "anomaly": 1, "abnormal": 1, "false": 0, "true": 1}


def _is_number(tok: str) -> bool:
    tok = tok.strip().strip('"')
    if tok == "":
        return True  # a missing value in a numeric column
    try:
        float(tok)
        return True
    except ValueError:
        return False


# header names that say "this column is the row's position or time, not a measurement" (compared
# lower-case with everything but letters removed; pandas writes an unnamed index as '' or 'Unnamed: 0')
_INDEX_NAMES = {"", "index", "idx", "t", "ts", "time", "timestamp", "timestampmin", "date", "datetime", "step",
                "timestep", "steps", "row", "rowid", "no", "unnamed"}
_TIME_FORMATS = ("%d/%m/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S",
                 "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d",
                 "%d.%m.%Y %H:%M:%S", "%d.%m.%Y", "%H:%M:%S", "%H:%M")


def _index_like_name(name: str) -> bool:
    key = re.sub(r"[^a-z]", "", name.lower())
    return key in _INDEX_NAMES or key.startswith("unnamed")


def _parses_as_time(tok: str) -> bool:
    """True when ``tok`` is a date/time (ISO 8601 or a common day/month/year form)."""
    import datetime

    tok = tok.strip().strip('"').strip()
    if not tok or _is_number(tok):
        return False
    try:
        datetime.datetime.fromisoformat(tok.replace("Z", "+00:00"))
        return True
    except ValueError:
        pass
    for fmt in _TIME_FORMATS:
        try:
            datetime.datetime.strptime(tok, fmt)
            return True
        except ValueError:
            continue
    return False


def _is_index(column: np.ndarray, named: bool) -> bool:
    """An index column: when its header names it as an index or time (``named``), strictly
    increasing integers (row numbers, epoch seconds); without a header, integers rising by exactly 1."""
    v = np.asarray(column, dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
        return False
    d = np.diff(v)
    return bool(np.all(d > 0)) if named else bool(v.size > 2 and np.all(d == 1))


def _resolve_column(spec: Union[int, str], header: List[str], what: str) -> int:
    n = len(header)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        i = int(spec)
        if not -n <= i < n:
            raise ValueError(f"{what}: expected a column index in [{-n}, {n}), got {i}")
        return i % n
    if isinstance(spec, str):
        names = [h.strip().strip('"').lower() for h in header]
        key = spec.strip().lower()
        if key in names:
            return names.index(key)
        raise ValueError(f"{what}: expected one of the columns {header[:8]}{'…' if n > 8 else ''}, got {spec!r}")
    raise TypeError(f"{what}: expected a column name or index, got {type(spec).__name__}")


def _parse_labels(tokens: np.ndarray, what: str, label_map: Optional[Dict[str, int]],
                  lines: Optional[np.ndarray] = None) -> np.ndarray:
    """0/1 labels from strings: numbers, or words via label_map (spaces and case ignored).
    ``lines`` (the file line of each token) lets an error name the line of the first bad value."""
    toks = np.char.lower(np.char.replace(np.char.strip(np.char.strip(tokens), '"'), " ", ""))
    try:
        return check_labels(toks.astype(np.float64), what)
    except ValueError:
        pass
    mapping = {k.replace(" ", "").lower(): int(v) for k, v in (label_map or _LABEL_WORDS).items()}
    uniq = np.unique(toks)
    lut, unknown = np.zeros(uniq.shape[0], dtype=np.int8), []
    for i, u in enumerate(uniq.tolist()):  # a word of the map, or a number that is 0 or 1
        if u in mapping:
            lut[i] = mapping[u]
            continue
        try:
            number = float(u)
        except ValueError:
            number = None
        if number in (0.0, 1.0):
            lut[i] = int(number)
        else:
            unknown.append(u)
    if unknown:
        at = ""
        if lines is not None:
            first = int(np.flatnonzero(np.isin(toks, unknown))[0])
            at = f" (first on line {int(lines[first])}: {str(tokens[first])!r})"
        raise ValueError(f"{what}: expected 0/1 or one of {sorted(mapping)}, got values such as {unknown[:5]}{at}")
    return check_labels(lut[np.searchsorted(uniq, toks)], what)


_CSV_HEAD_LINES = 64


def _blank(row: Sequence[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _csv_rows(path: str, delimiter: str, first_line: int = 1,
              max_lines: Optional[int] = None) -> Tuple[List[List[str]], List[int]]:
    """Non-blank rows of a delimited file from physical line ``first_line`` on, with the (1-based)
    line each row ends on; at most ``max_lines`` physical lines are read."""
    rows, lines = [], []
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        for row in reader:
            if max_lines is not None and reader.line_num > max_lines:
                break
            if reader.line_num < first_line or _blank(row):
                continue
            rows.append(row)
            lines.append(reader.line_num)
    return rows, lines


def _data_lines(path: str, delimiter: str, first_line: int, width: int, where: str, ref: int) -> np.ndarray:
    """Physical line numbers of the non-blank data rows from ``first_line`` on, after checking that
    each has ``width`` fields (a ValueError naming the first line that does not). Counts delimiters
    on raw bytes (fast) when the file has no quotes; with quotes the csv module does it."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if b'"' in raw or len(delimiter.encode()) != 1:
        rows, lines = _csv_rows(path, delimiter, first_line)
        for row, line in zip(rows, lines):
            if len(row) != width:
                _ragged(where, line, width, len(row), ref)
        return np.asarray(lines, dtype=np.int64)
    a = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(a == ord("\n"))
    if raw and not raw.endswith(b"\n"):
        ends = np.append(ends, len(raw))
    starts = np.concatenate(([0], ends[:-1] + 1))[first_line - 1:]
    ends = ends[first_line - 1:]
    delims = np.flatnonzero(a == delimiter.encode()[0])
    fields = np.searchsorted(delims, ends) - np.searchsorted(delims, starts) + 1  # per physical line
    keep = np.ones(starts.shape[0], dtype=bool)
    for i in np.flatnonzero(fields == 1).tolist():  # only a line without a delimiter can be blank
        keep[i] = bool(raw[starts[i]:ends[i]].strip())
    lines = np.arange(first_line, first_line + starts.shape[0], dtype=np.int64)
    bad = np.flatnonzero(keep & (fields != width))
    if bad.size:
        _ragged(where, int(lines[bad[0]]), width, int(fields[bad[0]]), ref)
    return lines[keep]


def _ragged(where: str, line: int, width: int, got: int, ref: int) -> None:
    raise ValueError(f"{where}, line {line}: expected {width} fields (as many as line {ref}, the first of the "
                     f"table), got {got}{' (an extra field)' if got == width + 1 else ''}")


def _fill_empty_fields(raw: bytes, delimiter: str) -> bytes:
    """``raw`` with every empty field (between two delimiters, or at a line's start or end before
    or after one) written as ``nan``, so that numpy's fast reader reads missing values as NaN. A
    blank line holds no field and stays blank. (Plain byte replacements: a regex is ~50x slower.)"""
    d = delimiter.encode()
    for _ in range(2):  # ",,," -> ",nan,," -> ",nan,nan,"
        raw = raw.replace(d + d, d + b"nan" + d)
    raw = raw.replace(d + b"\r\n", d + b"nan\r\n").replace(d + b"\n", d + b"nan\n").replace(b"\n" + d, b"\nnan" + d)
    if raw.startswith(d):
        raw = b"nan" + raw
    if raw.endswith(d):
        raw += b"nan"
    return raw


def _loadtxt(source: Any, delimiter: str, skip: int, cols: List[int], dtype: Any) -> Optional[np.ndarray]:
    try:
        with warnings.catch_warnings():  # numpy notes that blank lines are not rows: they are not, here too
            warnings.filterwarnings("ignore", message="Input line .* contained no data", category=UserWarning)
            return np.loadtxt(source, delimiter=delimiter, skiprows=skip, usecols=cols, dtype=dtype, ndmin=2,
                              quotechar='"', comments=None)
    except ValueError:
        return None


def _read_fast(path: str, delimiter: str, first_line: int, value_cols: List[int], lab_idx: Optional[int],
               n_rows: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(values float64 (n_rows, len(value_cols)), label tokens (n_rows,) as text) by numpy's C
    reader, None for a part it cannot read exactly (the caller then uses the exact reader).
    Numeric labels come in the same pass as the values; missing values are read by filling empty
    fields in as ``nan`` (files without quotes). ``n_rows`` (the data rows counted while checking
    the widths) guards against the readers disagreeing on which lines are rows."""
    skip = first_line - 1

    def rows_ok(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
        return a if a is not None and a.shape[0] == n_rows else None

    values = labels = None
    if value_cols:
        cols = value_cols + ([lab_idx] if lab_idx is not None else [])
        sources: List[Any] = [path]
        for source in sources:  # the file, then (no quotes) the file with its empty fields filled in
            out = rows_ok(_loadtxt(source, delimiter, skip, cols, np.float64))
            if source is not path:
                source.seek(0)  # read again below
            if out is not None:
                values = out[:, : len(value_cols)]
                if lab_idx is not None and np.isfinite(out[:, -1]).all():
                    labels = out[:, -1].astype(str)
                break
            if lab_idx is not None:  # the labels may be words: the values alone
                values = rows_ok(_loadtxt(source, delimiter, skip, value_cols, np.float64))
                if values is not None:
                    break
            if source is path:
                with open(path, "rb") as fh:
                    raw = fh.read()
                if b'"' not in raw:
                    sources.append(io.BytesIO(_fill_empty_fields(raw, delimiter)))
    if lab_idx is not None and labels is None:
        tokens = rows_ok(_loadtxt(path, delimiter, skip, [lab_idx], str))
        labels = None if tokens is None else tokens[:, 0]
    return values, labels


def _read_all_numeric(path: str, delimiter: str, first_line: int, width: int, value_cols: List[int],
                      lab_idx: Optional[int]) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """(values, label tokens or None) when every field of every data row is a number, read in one
    pass of numpy's C reader over all ``width`` columns: without ``usecols`` numpy refuses a row of
    any other width itself, so no separate count of the fields is needed. None when anything does
    not fit (text, an empty field, a ragged row): the caller's careful path then says what and where."""
    out = _loadtxt(path, delimiter, first_line - 1, None, np.float64)
    if out is None or out.shape[1] != width:
        return None
    labels = out[:, lab_idx].astype(str) if lab_idx is not None else None
    return out[:, value_cols], labels


def _parse_numbers(tokens: List[str], where: str, column: str, lines: Sequence[int]) -> np.ndarray:
    """float64 values of one column's text fields; empty fields are missing (NaN); any other text
    is a ValueError naming the file, the line and the column."""
    arr = np.char.strip(np.asarray(tokens, dtype=str))
    missing = arr == ""
    try:
        return np.where(missing, "nan", arr).astype(np.float64)
    except ValueError:
        pass
    for i, tok in enumerate(arr.tolist()):
        if tok == "":
            continue
        try:
            float(tok)
        except ValueError:
            raise ValueError(f"{where}, line {lines[i]}, column {column!r}: expected a number (or an empty field "
                             f"for a missing value), got {tokens[i]!r}") from None
    raise AssertionError("unreachable: numpy refused a column that Python parses")  # pragma: no cover


def load_csv(path: PathLike, label_column: Union[None, int, str] = None,
             index_column: Union[None, int, str] = "auto",
             delimiter: str = ",", header: Union[str, bool] = "infer", drop_columns: Sequence[Union[int, str]] = (),
             label_map: Optional[Dict[str, int]] = None, nan_policy: str = "interpolate",
             name: Optional[str] = None, allow_no_values: bool = False, label_optional: bool = False) -> CSVData:
    """Read a delimited text file of one series: values (T, C) float32 and optional 0/1 labels.

    ``label_column``/``index_column``/``drop_columns`` take a column index (negative counts from the
    end) or a header name (case-insensitive); with ``label_optional`` a named label column that the
    file does not have means no labels. ``header="infer"`` treats the first line as a header
    when any of its fields is not a number; with a header, leading lines before it that have fewer
    fields are skipped (spreadsheet exports).

    Which columns are values is decided by name and content, never by position: with
    ``index_column="auto"`` (default) a numeric column is an index, and ignored, when its integers
    rise by exactly 1 at every row, or when its header names a position or time (``index``,
    ``time``, ``timestamp``, ``date``, ``step``, an empty name or pandas' ``Unnamed: 0``, ...) and
    its integers rise strictly; ``index_column=None`` keeps every numeric column. Columns whose
    first non-empty value (in the first 64 lines) is not a number are ignored as ``timestamp``
    when it parses as a date/time, else as ``text``; they are also listed in ``dropped``. Every
    ignored column and why is in ``ignored``; :meth:`CSVData.describe` says it in one line. Missing
    (empty) cells become NaN and then follow ``nan_policy``. Labels may be numbers or words
    (``Normal``/``Attack`` by default, see ``label_map``).

    The whole file is read strictly: every non-blank row after the header must have the header's
    number of fields, and every value of a value column must be a number or empty; anything else
    is a ValueError naming the file, the line (1-based) and the column. (Fast path: numpy's C
    reader plus a count of the fields per line; the exact Python reader only when that fails.)
    """
    path = os.fspath(path)
    where = path if name is None else f"{name} ({path})"
    name = name or os.path.basename(path)
    _require_file(path, name)
    rows, row_lines = _csv_rows(path, delimiter, max_lines=_CSV_HEAD_LINES)
    if not rows:
        raise ValueError(f"{name}: expected a non-empty CSV file, got an empty one at {path!r}")
    lengths = [len(r) for r in rows]
    counts = {n: lengths.count(n) for n in lengths}
    usual = max(counts, key=lambda n: (counts[n], -lengths.index(n)))  # the usual row length; earliest on ties
    skip = next(i for i, n in enumerate(lengths) if n >= usual)  # junk lines with fewer fields before the table
    width = lengths[skip]  # the header (or first row) says how many fields every row has
    if isinstance(label_column, str) and header is not False:
        # the header is the first line naming the label column (spreadsheet exports add lines above it)
        key = label_column.strip().lower()
        named = [i for i, r in enumerate(rows) if key in (t.strip().strip('"').lower() for t in r)]
        if named:
            skip = named[0]
            width = len(rows[skip])
    first = rows[skip]
    if header == "infer":
        has_header = not all(_is_number(t) for t in first)
    else:
        has_header = bool(header)
    columns = [h.strip().strip('"') for h in first] if has_header else [f"c{i}" for i in range(width)]
    head = rows[skip + (1 if has_header else 0):]
    head_lines = row_lines[skip + (1 if has_header else 0):]
    if not head:
        raise ValueError(f"{name}: expected data rows after the header in {path!r}, got none")
    ref = row_lines[skip]
    for row, line in zip(head, head_lines):
        if len(row) != width:
            _ragged(where, line, width, len(row), ref)
    first_data_line = head_lines[0]

    if (label_optional and isinstance(label_column, str)
            and label_column.strip().lower() not in [c.lower() for c in columns]):
        label_column = None
    lab_idx = None if label_column is None else _resolve_column(label_column, columns, "label_column")
    ignored: Dict[int, str] = {}
    for d in drop_columns:
        ignored[_resolve_column(d, columns, "drop_columns")] = "dropped as asked"
    auto_index = isinstance(index_column, str) and index_column == "auto"
    if index_column is not None and not auto_index:
        ignored[_resolve_column(index_column, columns, "index_column")] = "index, as asked"
    if lab_idx is not None:
        ignored[lab_idx] = "labels"
    value_cols, dropped = [], []
    for i in range(width):
        if i in ignored:
            continue
        seen = [r[i] for r in head if r[i].strip().strip('"')][:5]  # its first non-empty values
        if _is_number(seen[0] if seen else ""):
            value_cols.append(i)
        else:
            dropped.append(columns[i])
            ignored[i] = "timestamp" if all(_parses_as_time(t) for t in seen) else "text, not a number"
    # by name and content: a header that names a position or time, or no header at all (then only
    # integers rising by exactly 1 count); a column with a header name of its own is a measurement
    index_candidates = [i for i in value_cols if auto_index and (not has_header or _index_like_name(columns[i]))]
    if not value_cols and not allow_no_values:
        raise ValueError(f"{name}: expected at least one numeric value column in {path!r}, got none"
                         + (f" ({describe_columns(name, [], _ignored_names(ignored, columns))})" if ignored else ""))

    def finish(values: np.ndarray, labels: Optional[np.ndarray]) -> CSVData:
        keep = list(range(len(value_cols)))
        for j, i in enumerate(value_cols):
            named = has_header and _index_like_name(columns[i])
            if i in index_candidates and len(keep) > 1 and _is_index(values[:, j], named):
                keep.remove(j)
                ignored[i] = ("index: integers rising by 1" if not named else
                              "index: named so, rising integers" if columns[i].strip() else
                              "index: unnamed, rising integers")
        if len(keep) < len(value_cols):
            values = values[:, keep]
        used = [value_cols[j] for j in keep]
        if used:
            values = check_series(values, name, nan_policy=nan_policy)
            if labels is not None and labels.shape[0] != values.shape[0]:
                raise ValueError(f"{name}: expected as many labels as rows ({values.shape[0]}), got {labels.shape[0]}")
        return CSVData(values=values.astype(np.float32), labels=labels, columns=[columns[i] for i in used],
                       dropped=dropped, ignored=_ignored_names(ignored, columns), name=name)

    # the whole file. Fastest: every column is a number, read by numpy's C reader without usecols, which
    # refuses any row of another width itself. Else every row's width, then the numbers, else the exact reader.
    full = _read_all_numeric(path, delimiter, first_data_line, width, value_cols, lab_idx) if value_cols else None
    if full is not None:
        values, label_tokens = full
        if lab_idx is not None:
            try:
                labels = _parse_labels(label_tokens, f"{where}, column {columns[lab_idx]!r}", label_map)
            except ValueError:  # the slower path below names the line of the first bad label
                full = None
    if full is not None:
        return finish(values, labels if lab_idx is not None else None)
    lines = _data_lines(path, delimiter, first_data_line, width, where, ref)
    values, label_tokens = _read_fast(path, delimiter, first_data_line, value_cols, lab_idx, lines.shape[0])
    if (value_cols and values is None) or (lab_idx is not None and label_tokens is None):
        rows, row_lines = _csv_rows(path, delimiter, first_data_line)
        for row, line in zip(rows, row_lines):
            if len(row) != width:
                _ragged(where, line, width, len(row), ref)
        lines = np.asarray(row_lines, dtype=np.int64)
        values = np.empty((len(rows), len(value_cols)), dtype=np.float64)
        for j, c in enumerate(value_cols):
            values[:, j] = _parse_numbers([r[c] for r in rows], where, columns[c], row_lines)
        if lab_idx is not None:
            label_tokens = np.asarray([r[lab_idx] for r in rows], dtype=str)
    if values is None:
        values = np.zeros((0, 0), dtype=np.float64)
    labels = None
    if lab_idx is not None:
        what = f"{where}, column {columns[lab_idx]!r}"
        try:
            labels = _parse_labels(label_tokens, what, label_map, lines)
        except ValueError:  # say it with the file's own text (the fast reader gave numbers as '2.0')
            text = _loadtxt(path, delimiter, int(lines[0]) - 1, [lab_idx], str) if lines.size else None
            if text is not None and text.shape[0] == lines.shape[0]:
                _parse_labels(text[:, 0], what, label_map, lines)
            raise
    return finish(values, labels)


def _ignored_names(ignored: Dict[int, str], columns: List[str]) -> Dict[str, str]:
    return {(columns[i] or f"column {i + 1}"): why for i, why in sorted(ignored.items())}
