"""Where the lake lives: a local directory, or a prefix on S3-compatible object storage.

``resolve(lake)`` turns what the user gave (``--lake``, ``$KARMIC_LAKE``, a ``Path``) into the
lake's root: a ``pathlib.Path`` for a directory, an :class:`ObjectPath` for ``s3://bucket/prefix``.
``ObjectPath`` has the few ``pathlib`` methods the lake code uses (``/``, ``name``, ``stem``,
``parent``, ``glob``, ``iterdir``, ``is_file``, ``is_dir``, ``read_bytes``, ``read_text``,
``unlink``), so the writers and readers take either root and only the three operations below
look at which one they have:

- :func:`write_atomic(path, write)`: ``write(f)`` fills a binary file. Local: the lake's rule
  (docs/DESIGN.md), a temporary name the ``*.parquet`` glob does not match, flush, fsync, atomic
  rename, fsync of the directory. Object storage has no rename and needs none: the bytes go up
  in **one PUT**, and an object is visible whole or not at all. ``exclusive=True`` (append-only
  part files) makes the PUT conditional (``If-None-Match: *``), so a part is never overwritten:
  :func:`write_new_part` numbers parts by listing and takes the next number if one was taken.
- :func:`read_parquet`, :func:`read_many`: one GET per object (concurrent for many).
- :func:`register_duckdb`: the s3fs filesystem registered with a DuckDB connection, so
  ``read_parquet('s3://...')`` reads through Python (DuckDB's httpfs extension would have to be
  downloaded at run time, which this project never does).

The filesystem is s3fs (the ``s3`` extra), imported only for an ``s3://`` lake. Endpoint and
credentials come from the standard AWS variables, read by botocore: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for a non-AWS server such as MinIO or moto, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, or a profile.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import io
import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import IO, Any

SCHEMES = ("s3",)
ENV_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")
PUT_LIMIT = 5 * 2**30  # one S3 PUT takes up to 5 GiB; s3fs splits above 2 x chunksize


class StorageError(ValueError):
    """An object-storage problem for the user (credentials, endpoint, bucket): one line."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _translate(fn):
    """FileNotFoundError / FileExistsError pass through; anything else from the object store
    (no credentials, endpoint down, access denied) becomes one StorageError line."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except (FileNotFoundError, FileExistsError, StorageError):
            raise
        except Exception as exc:
            raise StorageError(f"{self}: {type(exc).__name__}: {_one_line(exc)}") from exc

    return wrapper


# --- the filesystem --------------------------------------------------------------------------
_FS: dict[tuple, Any] = {}


def _new_filesystem(listings_cache: bool):
    try:
        import s3fs
    except ImportError:
        raise StorageError("an s3:// lake needs s3fs: pip install 'karmic-rl[s3]'") from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=listings_cache,
                             skip_instance_cache=True,
                             config_kwargs={"connect_timeout": 10, "read_timeout": 120})


def filesystem(protocol: str = "s3"):
    """The process's s3fs filesystem for the current AWS_* environment, without a listing cache:
    other processes write to the same lake, so every listing asks the server."""
    key = (protocol, os.getpid(), *(os.environ.get(k) for k in ENV_VARS))
    fs = _FS.get(key)
    if fs is None:
        fs = _FS[key] = _new_filesystem(listings_cache=False)
    return fs


# Marks a snapshot's filesystem on the object itself: fsspec filesystems compare equal by their
# arguments, so a set of them would confuse one snapshot's filesystem with another's.
_SNAPSHOT_MARK = "_karmic_listing_snapshot"


def snapshot(root: LakePath, tables: Iterable[str] = ()) -> LakePath:
    """The root to read through: locally ``root`` itself; on object storage the same prefix on a
    new filesystem that caches listings (and so every file's size), primed with one flat listing
    per table in ``tables``. A DuckDB connection then sees the lake as it was when it was opened,
    without the LIST and HEAD requests DuckDB's fsspec reads make per file and per query. A root
    that is a snapshot already is returned as it is."""
    if not isinstance(root, ObjectPath) or getattr(root.fs, _SNAPSHOT_MARK, False):
        return root  # a snapshot is read through as it is: one listing serves many connections
    snap = ObjectPath(_new_filesystem(listings_cache=True), root.key, root.scheme)
    setattr(snap.fs, _SNAPSHOT_MARK, True)
    for t in tables:
        try:
            (snap / t).find()
        except FileNotFoundError:  # no bucket: the caller's is_dir() says so
            break
    return snap


@functools.total_ordering
class ObjectPath:
    """``s3://bucket/key`` with the pathlib methods the lake uses (see the module docstring)."""

    __slots__ = ("fs", "key", "scheme")

    def __init__(self, fs, key: str, scheme: str = "s3") -> None:
        self.fs = fs
        self.key = key.strip("/")
        self.scheme = scheme

    # -- names -----------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and (self.scheme, self.key) == (other.scheme, other.key)

    def __lt__(self, other: ObjectPath) -> bool:
        return self.key < other.key

    def __hash__(self) -> int:
        return hash((self.scheme, self.key))

    def __truediv__(self, part: str | os.PathLike) -> ObjectPath:
        return ObjectPath(self.fs, f"{self.key}/{os.fspath(part).strip('/')}", self.scheme)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.fs, self.key.rsplit("/", 1)[0], self.scheme) if "/" in self.key else self

    @property
    def bucket(self) -> str:
        return self.key.split("/", 1)[0]

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def resolve(self) -> ObjectPath:
        return self

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object storage has no directories: a prefix exists once a key is under it."""

    # -- reading -----------------------------------------------------------------------------
    @_translate
    def exists(self) -> bool:
        return self.fs.exists(self.key)

    @_translate
    def is_file(self) -> bool:
        return self.fs.isfile(self.key)

    @_translate
    def is_dir(self) -> bool:
        return self.fs.isdir(self.key)

    @_translate
    def iterdir(self) -> list[ObjectPath]:
        try:
            keys = self.fs.ls(self.key, detail=False)
        except FileNotFoundError:
            return []
        return [ObjectPath(self.fs, k, self.scheme) for k in keys if k.strip("/") != self.key]

    @_translate
    def glob(self, pattern: str) -> list[ObjectPath]:
        """Keys under this prefix matching ``pattern`` (``*`` does not cross ``/``), sorted."""
        keys = self.fs.glob(f"{self.key}/{pattern}")
        depth = pattern.count("/") + 1
        out = []
        for k in keys:
            rel = k[len(self.key) + 1:]
            if rel.count("/") + 1 == depth and fnmatch.fnmatchcase(rel, pattern):
                out.append(ObjectPath(self.fs, k, self.scheme))
        return sorted(out)

    @_translate
    def find(self) -> list[ObjectPath]:
        """Every object under this prefix (one flat, paginated listing)."""
        return [ObjectPath(self.fs, k, self.scheme) for k in self.fs.find(self.key)]

    @_translate
    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    # -- writing -----------------------------------------------------------------------------
    @_translate
    def put(self, data: bytes, exclusive: bool = False) -> None:
        """One PUT of ``data``; with ``exclusive``, FileExistsError if the key already exists."""
        if len(data) >= PUT_LIMIT:
            raise StorageError(f"{self}: {len(data)} bytes is more than one PUT takes (5 GiB)")
        kw: dict[str, Any] = {"chunksize": PUT_LIMIT}  # never a multipart upload
        try:
            if exclusive and not getattr(self.fs, "_karmic_no_conditional_put", False):
                try:
                    self.fs.pipe_file(self.key, data, mode="create", **kw)
                    return
                except OSError as exc:  # a server without conditional writes: plain PUTs
                    if isinstance(exc, FileExistsError) or exc.errno != errno.ENOSYS:
                        raise
                    self.fs._karmic_no_conditional_put = True
            self.fs.pipe_file(self.key, data, **kw)
        except FileNotFoundError as exc:  # the only thing a PUT can miss is the bucket
            raise StorageError(f"cannot write {self}: {_one_line(exc)} ({self.bucket})") from None

    @_translate
    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise


LakePath = Path | ObjectPath


def is_url(lake: object) -> bool:
    return isinstance(lake, str) and "://" in lake


def resolve(lake: str | os.PathLike | ObjectPath) -> LakePath:
    """The lake's root: ``Path`` for a directory, ``ObjectPath`` for ``s3://bucket/prefix``."""
    if isinstance(lake, ObjectPath):
        return lake
    if isinstance(lake, Path):
        s = str(lake)
        # Path("s3://b/p") collapses to "s3:/b/p": take it back as the URL it was
        if not any(s.startswith(f"{sch}:/") for sch in SCHEMES) or lake.exists():
            return lake
        lake = s.replace(":/", "://", 1)
    s = os.fspath(lake)
    if "://" not in s:
        return Path(s)
    scheme, rest = s.split("://", 1)
    if scheme.lower() not in SCHEMES:
        raise StorageError(f"unsupported lake URL {s!r}: use a directory or s3://bucket/prefix")
    parts = [p for p in rest.split("/") if p]
    if not parts:
        raise StorageError(f"lake URL {s!r} has no bucket: use s3://bucket/prefix")
    if any(p in (".", "..") for p in parts):
        raise StorageError(f"lake URL {s!r}: '.' and '..' are not allowed")
    return ObjectPath(filesystem(scheme.lower()), "/".join(parts), scheme.lower())


def is_remote(path: object) -> bool:
    return isinstance(path, ObjectPath)


# --- writing ---------------------------------------------------------------------------------
def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _table_of(path: LakePath) -> str:
    """``events`` for ``<lake>/events/run_id=x/part-0.parquet``: the name of a crash point."""
    return path.parent.parent.name if path.parent.name.startswith("run_id=") else path.parent.name


def write_atomic(path: LakePath | str, write: Callable[[IO[bytes]], Any], exclusive: bool = False) -> LakePath:
    """Create or replace ``path`` with what ``write(f)`` writes, atomically (module docstring).

    ``exclusive``: never replace an existing ``path`` (FileExistsError instead): a conditional PUT
    on object storage, a hard link of the temporary file locally (``link`` fails if the name is
    taken, where ``rename`` would replace it)."""
    from pipelines import faults

    path = resolve(path)
    if isinstance(path, ObjectPath):
        buf = io.BytesIO()
        write(buf)
        faults.point(f"write.{_table_of(path)}")
        path.put(buf.getvalue(), exclusive=exclusive)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # a kill here leaves the temporary file (never read: the *.parquet glob skips it)
        faults.point(f"write.{_table_of(path)}")
        if exclusive:
            os.link(tmp, path)  # FileExistsError if the name is taken
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temps(d: LakePath) -> list[Path]:
    """Remove the temporary files (``.<name>.tmp-<pid>``) that writers of ``d`` which are no
    longer running left behind (a kill between the write and the rename); returns them. Object
    storage has none (one PUT)."""
    if isinstance(d, ObjectPath) or not d.is_dir():
        return []
    gone = []
    for p in d.glob(".*.tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_keyed(path: LakePath | str, write: Callable[[IO[bytes]], Any]) -> bool:
    """Write ``path`` unless it exists (atomically, never replacing it); False if it existed.

    The lake's exactly-once rule for rows a resumed run produces again: a part named by what it
    holds (a round, an update) is written once, and a re-run that produces it again finds the name
    taken and writes nothing (a deterministic re-run produces the same bytes' rows)."""
    path = resolve(path)
    if path.is_file():  # the common case on a resume: no need to serialise the table
        return False
    try:
        write_atomic(path, write, exclusive=True)
    except FileExistsError:
        return False
    return True


def write_bytes(path: LakePath | str, data: bytes, exclusive: bool = False) -> LakePath:
    return write_atomic(path, lambda f: f.write(data), exclusive=exclusive)


def write_new_part(d: LakePath, name: Callable[[int], str], first: int,
                   write: Callable[[IO[bytes]], Any]) -> LakePath:
    """Write the next part ``d / name(n)``, ``n`` from ``first`` (the next number by listing).

    Local: one writer per run partition, as before. Object storage: a conditional PUT; if the
    number was taken meanwhile (another writer), try the next one."""
    if not isinstance(d, ObjectPath):
        return write_atomic(d / name(first), write)
    buf = io.BytesIO()
    write(buf)
    data = buf.getvalue()
    n = first
    for _ in range(100):
        path = d / name(n)
        try:
            path.put(data, exclusive=True)
            return path
        except FileExistsError:
            n += 1
    raise StorageError(f"{d}: no free part number after 100 attempts")


# --- reading ---------------------------------------------------------------------------------
def read_text(path: LakePath | str) -> str | None:
    """A small file's text (run.json, a manifest), None if there is no such file."""
    try:
        return resolve(path).read_text()
    except FileNotFoundError:
        return None


def read_parquet(path: LakePath | str, columns: list[str] | None = None):
    """A Parquet file as an Arrow table (object storage: one GET, parsed in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = resolve(path)
    if isinstance(path, ObjectPath):
        return pq.read_table(pa.BufferReader(path.read_bytes()), columns=columns)
    return pq.read_table(path, columns=columns)


def read_many(paths: Iterable[LakePath]) -> list[bytes]:
    """The bytes of many files, in order (object storage: concurrent GETs)."""
    paths = list(paths)
    remote = [p for p in paths if isinstance(p, ObjectPath)]
    if not remote:
        return [Path(p).read_bytes() for p in paths]
    try:
        got = remote[0].fs.cat([p.key for p in remote], on_error="raise")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise StorageError(f"{remote[0].parent}: {type(exc).__name__}: {_one_line(exc)}") from exc
    return [got[p.key] if isinstance(p, ObjectPath) else Path(p).read_bytes() for p in paths]


def register_duckdb(con, root: LakePath) -> None:
    """Let ``con`` read ``s3://`` paths through ``root``'s s3fs filesystem (no-op locally);
    give it a :func:`snapshot` root."""
    if isinstance(root, ObjectPath):
        con.register_filesystem(root.fs)
