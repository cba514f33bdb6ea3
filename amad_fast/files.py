"""The package's files: one format for training checkpoints, AMAD detector files and baseline
detector files, atomic writes, and the lock that gives a checkpoint directory to one run.

Every file amad_fast writes is a dict saved with ``torch.save`` (atomically, :func:`save_atomic`)
that ``torch.load(weights_only=True)`` reads back: tensors and plain data (dict, list, tuple, str,
int, float, bool, None), nothing that imports or calls code when unpickled. Every load in the
package goes through :func:`read_file`, which never unpickles with ``weights_only=False``. Besides
its content (the *payload*) a file written by :func:`write_file` carries three keys:

* ``"format"``: the kind of file and its layout version, e.g. ``"amad_fast.detector/1"``;
* ``"package_version"``: the amad_fast version that wrote it;
* ``"checksum"``: ``"sha256:<hex>"`` of a canonical encoding of every other key
  (:func:`payload_digest`: each tensor's dtype, shape and bytes, each plain value exactly), so
  that any change of content after writing (a flipped bit, a truncated tensor, a hand-edited
  value) is detected on load instead of silently changing results.

What :func:`read_file` does with a bad file, always as a :class:`FileFormatError` (a ValueError)
whose message starts with the path: empty, a directory, truncated or not a torch file, a pickle
that asks for code (refused by ``weights_only=True``; nothing runs), not a dict, another format,
content that does not match the checksum. A file with a valid format but no checksum was written
by amad_fast before checksums existed: it loads with a RuntimeWarning saying its integrity cannot
be verified (saving it again adds one).

:func:`save_atomic` writes a temporary file ``.tmp-<pid>.<host>-*.pt`` in the target directory,
fsyncs it, renames it over the target and fsyncs the directory, so a reader sees the old file or
the new one, never a torn one, also after a power cut. A process killed during the write leaves
its temporary file behind: the next write into that directory removes such files whose process is
gone (with a warning), and :class:`DirectoryLock` removes every one in the directory it locks.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import re
import socket
import struct
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "FileFormatError",
    "DirectoryInUseError",
    "DirectoryLock",
    "save_atomic",
    "write_file",
    "read_file",
    "payload_digest",
    "to_plain",
    "check_writable_file",
    "check_writable_dir",
    "content_must_fit",
    "remove_stale_tmp_files",
    "META_KEYS",
]

#: keys every file carries besides its payload
META_KEYS = ("format", "package_version", "checksum")
TMP_PREFIX = ".tmp-"
TMP_SUFFIX = ".pt"


class FileFormatError(ValueError):
    """A file that is not a valid amad_fast file of the expected kind (message starts with its path)."""


class DirectoryInUseError(RuntimeError):
    """Another run holds the lock of a directory (see :class:`DirectoryLock`)."""


def _package_version() -> str:
    from amad_fast import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# Plain data and the checksum
# ---------------------------------------------------------------------------------------------
def to_plain(obj: Any, where: str = "payload") -> Any:
    """``obj`` with numpy scalars turned into Python numbers and numpy arrays into tensors, so
    that ``torch.load(weights_only=True)`` can read it; anything else that is not a tensor or plain
    data is a TypeError naming where it sits (a bug in the writer, caught before the file exists)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"{where}: expected str or int keys, got {k!r} ({type(k).__name__})")
            out[k] = to_plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: expected tensors and plain data (dict, list, tuple, str, int, float, bool, None), "
                    f"got {type(obj).__module__}.{type(obj).__name__}")


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Canonical, type-tagged, length-prefixed encoding of ``obj`` into the hash ``h``."""
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"T" if obj else b"F")
    elif isinstance(obj, int):
        s = str(obj).encode()
        h.update(b"I" + struct.pack("<Q", len(s)) + s)
    elif isinstance(obj, float):
        s = float.hex(obj).encode()  # exact, and distinguishes -0.0, inf and nan
        h.update(b"D" + struct.pack("<Q", len(s)) + s)
    elif isinstance(obj, str):
        s = obj.encode("utf-8", "surrogatepass")
        h.update(b"S" + struct.pack("<Q", len(s)) + s)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        head = json.dumps([str(t.dtype), list(t.shape)]).encode()
        raw = t.reshape(-1).view(torch.uint8).numpy()
        h.update(b"X" + struct.pack("<Q", len(head)) + head + struct.pack("<Q", raw.nbytes))
        h.update(memoryview(raw))
    elif isinstance(obj, (list, tuple)):
        h.update((b"L" if isinstance(obj, list) else b"U") + struct.pack("<Q", len(obj)))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, dict):
        h.update(b"M" + struct.pack("<Q", len(obj)))
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, k)
            _feed(h, obj[k])
    else:
        raise TypeError(f"payload_digest: expected tensors and plain data, got {type(obj).__name__}")


def payload_digest(content: Dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of every key of ``content`` except ``"checksum"`` (tensors by dtype, shape
    and bytes; plain values exactly; dict keys in sorted order)."""
    h = hashlib.sha256(b"amad_fast.payload/1\n")
    _feed(h, {k: v for k, v in content.items() if k != "checksum"})
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


_TMP_RE = re.compile(r"^\.tmp-(\d+)\.([0-9a-f]{8})-.*\.pt$")


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: assume it runs
    return True


def remove_stale_tmp_files(directory: str, all_of_them: bool = False) -> List[str]:
    """Remove the temporary files of interrupted :func:`save_atomic` writes in ``directory``.

    Without ``all_of_them`` only files named by a process of this host that no longer runs are
    removed (another process may be writing the others right now); with it every ``.tmp-*.pt``
    (the caller holds the directory's lock, so no write of amad_fast is in flight there; older
    versions named these files without a pid). Returns the removed names and warns when any.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    host = _host_tag()
    removed = []
    for name in names:
        if not (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)):
            continue
        if not all_of_them:
            m = _TMP_RE.match(name)
            if m is None or m.group(2) != host or _pid_running(int(m.group(1))):
                continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass
    if removed:
        warnings.warn(f"{directory}: removed {len(removed)} temporary file(s) left by an interrupted write "
                      f"({', '.join(sorted(removed)[:3])}{', …' if len(removed) > 3 else ''})",
                      RuntimeWarning, stacklevel=3)
    return removed


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj: Any, path: str) -> None:
    """torch.save ``obj`` to ``path`` atomically: a temporary file in the same directory (named
    with this process's pid and host, so a later write can tell a dead writer's leftover from a
    write in progress), fsync, rename over ``path``, fsync of the directory. On any failure the
    temporary file is removed and an existing ``path`` is left as it was."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_tmp_files(directory)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}.{_host_tag()}-", suffix=TMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # e.g. ENOSPC from inside torch.save: say which file could not be written
            raise OSError(exc.errno, f"{exc.strerror or exc} (writing it failed; any previous file is unchanged)",
                          path) from exc
        raise
    _fsync_dir(directory)


def write_file(path: str, fmt: str, payload: Dict[str, Any]) -> None:
    """Write ``payload`` (tensors and plain data; numpy values are converted) as a file of format
    ``fmt`` with the package version and the checksum (see the module docstring), atomically."""
    content = to_plain({k: v for k, v in payload.items() if k not in META_KEYS})
    content["format"] = fmt
    content["package_version"] = _package_version()
    content["checksum"] = payload_digest(content)
    save_atomic(content, os.fspath(path))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    line = (text.splitlines() or [""])[0]
    return line[:limit] + ("…" if len(line) > limit else "")


def _refused_global(exc: BaseException) -> Optional[str]:
    """The global a weights_only unpickling refused (e.g. 'builtins.open'), when that is why it failed."""
    text = str(exc)
    m = (re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"unrecognized function ([^\s,]+)", text)
         or re.search(r"Unsupported class ([\w.]+)", text))
    return m.group(1) if m else None


def _unpickler_reason(exc: BaseException) -> str:
    """The useful line of a weights_only unpickling error (torch wraps it in paragraphs of advice)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    m = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    return (m.group(1).strip()[:160] if m else _first_line(exc))


def _quote_formats(formats: Sequence[str]) -> str:
    return " or ".join(repr(f) for f in formats)


def read_file(path: Any, noun: str, formats: Optional[Sequence[str]] = None, what: Optional[str] = None,
              hint: str = "") -> Dict[str, Any]:
    """Read and check a file written by :func:`write_file`; return its dict (meta keys included).

    ``noun`` names the kind of file in messages ("checkpoint", "detector file"); ``formats`` (when
    given) are the accepted values of ``"format"``, and a file of another format is refused as
    "expected ``what`` of format …, got format …"; ``hint`` is added to the message of a file that
    cannot be read safely. A missing file is a FileNotFoundError, a file the OS will not give
    (permissions, I/O errors) its OSError; every other problem a :class:`FileFormatError` that
    starts with the path. A file without a checksum (written before checksums existed) loads with
    a RuntimeWarning.
    """
    p = os.fspath(path)
    what = what or f"a {noun}"
    if os.path.isdir(p):
        raise FileFormatError(f"{p}: not a valid {noun}: it is a directory (expected {what})")
    if not os.path.exists(p):
        raise FileNotFoundError(errno.ENOENT, f"no such file (expected {what})", p)
    if os.path.getsize(p) == 0:
        raise FileFormatError(f"{p}: not a valid {noun}: the file is empty (an interrupted copy?)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except OSError as exc:
        if exc.filename is not None:  # the OS refused the path itself (permissions, ...)
            raise
        if exc.errno in (errno.EIO, errno.ENXIO, errno.ESTALE, errno.ENODEV):  # the device failed while reading
            raise OSError(exc.errno, exc.strerror or str(exc), p) from exc
        # torch's zip reader reports a truncated or foreign file as e.g. "[Errno 22] Invalid argument"
        raise FileFormatError(f"{p}: not a valid {noun}: unreadable, truncated or not a torch file "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    except pickle.UnpicklingError as exc:
        glob = _refused_global(exc)
        if glob is not None:
            raise FileFormatError(
                f"{p}: not a valid {noun}: unpickling it would import or call {glob}, which amad_fast refuses "
                f"(its files hold only tensors and plain data); nothing from the file was run"
                + (f". {hint}" if hint else "")) from None
        raise FileFormatError(f"{p}: not a valid {noun}: unreadable, truncated or not a torch file "
                              f"(UnpicklingError: {_unpickler_reason(exc)})") from None
    except Exception as exc:  # zip and pickle damage surfaces as RuntimeError, EOFError, KeyError, ...
        raise FileFormatError(f"{p}: not a valid {noun}: unreadable, truncated or not a torch file "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(state, dict):
        raise FileFormatError(f"{p}: not a valid {noun}: expected a dict with a 'format' key, "
                              f"got a {type(state).__name__}")
    fmt = state.get("format")
    if formats is not None and fmt not in formats:
        raise FileFormatError(f"{p}: expected {what} of format {_quote_formats(formats)}, got format {fmt!r}")
    verify_checksum(state, p, noun)
    return state


def verify_checksum(state: Dict[str, Any], path: str, noun: str) -> None:
    """Check ``state["checksum"]`` against its content (FileFormatError on a mismatch); a file
    without one is accepted with a RuntimeWarning (written before checksums existed)."""
    stored = state.get("checksum")
    if stored is None:
        warnings.warn(f"{path}: this {noun} has no checksum (written by an amad_fast version before checksums "
                      f"were added), so its integrity cannot be verified; save it again to add one",
                      RuntimeWarning, stacklevel=3)
        return
    try:
        computed = payload_digest(state)
    except (TypeError, RuntimeError) as exc:
        raise FileFormatError(f"{path}: not a valid {noun}: it holds something other than tensors and plain "
                              f"data ({exc})") from None
    if not isinstance(stored, str) or stored != computed:
        shown = stored[:23] + "…" if isinstance(stored, str) else repr(stored)[:40]
        raise FileFormatError(f"{path}: not a valid {noun}: its content does not match its checksum (the file "
                              f"was corrupted or modified after it was written; stored {shown}, computed "
                              f"{computed[:23]}…)")


# ---------------------------------------------------------------------------------------------
# Output locations
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def content_must_fit(path: str, noun: str, what: str):
    """Around the code that builds an object from a checked file's content: an error that the
    content causes there (a missing key, a wrong type or shape) becomes one
    :class:`FileFormatError` "PATH: not a valid NOUN: its content does not fit WHAT (Type: first
    line)", the way read_file reports a damaged file. FileFormatErrors pass through unchanged."""
    try:
        yield
    except FileFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise FileFormatError(f"{path}: not a valid {noun}: its content does not fit {what} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def check_writable_dir(directory: Any, what: str) -> None:
    """Raise a ValueError naming ``what`` unless files can be created in ``directory``: the
    directory itself when it exists, else its nearest existing ancestor (where it would be
    created), proved by creating and removing a temporary file there. Nothing is left behind."""
    d = os.path.abspath(os.fspath(directory))
    probe = d
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(f"{what} {os.fspath(directory)!r}: cannot write there: {probe!r} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".amad_fast-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"{what} {os.fspath(directory)!r}: cannot write there ({reason} in {probe!r})") from None


def check_writable_file(path: Any, what: str) -> None:
    """Raise a ValueError naming ``what`` unless ``path`` can be written: not a directory, and
    its directory (or the nearest existing ancestor) accepts new files."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise ValueError(f"{what} {p!r}: expected a file path, got a directory")
    check_writable_dir(os.path.dirname(os.path.abspath(p)), what)


# ---------------------------------------------------------------------------------------------
# One run per directory
# ---------------------------------------------------------------------------------------------
try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None


class DirectoryLock:
    """Exclusive use of ``directory`` by one run, through the lock file ``directory/.amad_fast.lock``.

    Where ``fcntl`` exists (Linux, macOS) the lock is ``flock(LOCK_EX | LOCK_NB)`` on that file: the
    kernel releases it when the holder exits in any way (also ``kill -9``), so a lock can never be
    stale, and two opens in one process (two threads) exclude each other too. The file holds the
    holder's pid, host and start time, for the message a second run gets, and is removed on
    release. A lock file left by a holder that died is simply locked again, with a warning naming
    it. After locking, the file's identity is re-checked (a releasing holder may have removed it in
    between). Without ``fcntl`` the file is created with ``O_CREAT | O_EXCL`` and one whose pid
    no longer runs on this host is taken over with a warning.

    On acquisition every temporary file of an interrupted write (``.tmp-*.pt``) in the directory
    is removed: no write of amad_fast can be in flight there. Use as a context manager; the lock is
    released on exit, also when an exception leaves the block.
    """

    NAME = ".amad_fast.lock"

    def __init__(self, directory: Any, what: str = "checkpoint_dir") -> None:
        self.directory = os.fspath(directory)
        self.what = what
        self.path = os.path.join(self.directory, self.NAME)
        self._fd: Optional[int] = None

    # -- holder records -----------------------------------------------------------------------
    @staticmethod
    def _record() -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()

    def _holder(self, fd: Optional[int] = None) -> Dict[str, Any]:
        try:
            if fd is not None:
                raw = os.pread(fd, 4096, 0)
            else:
                with open(self.path, "rb") as fh:
                    raw = fh.read(4096)
            rec = json.loads(raw.decode() or "{}")
            return rec if isinstance(rec, dict) else {}
        except (OSError, ValueError):
            return {}

    def _busy(self, holder: Dict[str, Any]) -> DirectoryInUseError:
        who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
               if holder else "a process that left no record")
        return DirectoryInUseError(
            f"{self.what} {self.directory!r} is in use by another run ({who}); two runs writing one "
            f"checkpoint directory would overwrite each other's checkpoints. Wait for it to finish or "
            f"use another {self.what}")

    # -- acquire / release --------------------------------------------------------------------
    def acquire(self) -> "DirectoryLock":
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: this lock is already held by this object")
        os.makedirs(self.directory, exist_ok=True)
        if _fcntl is not None:
            self._acquire_flock()
        else:  # pragma: no cover - Windows
            self._acquire_excl()
        remove_stale_tmp_files(self.directory, all_of_them=True)
        return self

    def _acquire_flock(self) -> None:
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except OSError as exc:
                holder = self._holder(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise self._busy(holder) from None
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and our lock
                os.close(fd)
                continue
            previous = self._holder(fd)
            if previous:
                warnings.warn(f"{self.path}: taking over the lock left by pid {previous.get('pid')} on "
                              f"{previous.get('host')} (started {previous.get('started')}), which ended "
                              f"without releasing it", RuntimeWarning, stacklevel=4)
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._record(), 0)
            os.fsync(fd)
            self._fd = fd
            return
        raise self._busy(self._holder())

    def _acquire_excl(self) -> None:  # pragma: no cover - Windows
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                pid = holder.get("pid")
                if (holder.get("host") == socket.gethostname() and isinstance(pid, int)
                        and not _pid_running(pid)):
                    warnings.warn(f"{self.path}: taking over the lock of pid {pid}, which no longer runs",
                                  RuntimeWarning, stacklevel=4)
                    try:
                        os.unlink(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                raise self._busy(holder) from None
            os.write(fd, self._record())
            os.fsync(fd)
            self._fd = fd
            return
        raise self._busy(self._holder())

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.unlink(self.path)  # while still locked: nobody can lock this inode and then lose it
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
