"""A write that only appears under its final name once complete: fsspec's transactional write, or a temp sibling.

Nothing ever appears under the final name until :meth:`AtomicWrite.commit`:

* S3 (``s3://``, ``s3a://``): a multipart upload whose parts go up concurrently with a bounded number of
  buffers (:class:`~airflow_runway.transfers._s3_multipart.S3MultipartFile`, on s3fs's client) that only
  ``commit()`` completes; ``discard()`` aborts it, so the parts already sent are dropped too.
* GCS (``gs://``, ``gcs://``): fsspec's transactional write, ``fs.open(path, "wb", autocommit=False)``: a
  resumable upload that only ``commit()`` finishes.
* Every other backend (local files, ``abfs://``, ...): the body goes to a hidden temporary sibling
  (``.<name>.<random>.partial``) that is renamed to the final name once complete and deleted on failure.
  On local files that rename is an atomic ``rename(2)`` in the same directory. fsspec's own transactional
  local write is not used because it stages the file in the system temp directory: the final move is then
  a non-atomic copy when that directory is on another filesystem, and on a ``tmpfs`` the whole video would
  sit in memory. adlfs commits its block list on close whatever ``autocommit`` says, so Azure takes the
  sibling route as well (its rename is a server-side copy: the final blob still only appears complete).

A worker killed outright (``SIGKILL``) can leave an incomplete multipart upload (expire those with a bucket
lifecycle rule) or a ``.partial`` sibling behind, never a partial object under the final name.
"""

from __future__ import annotations

import posixpath
import uuid
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from airflow_runway.transfers._s3_multipart import S3MultipartFile, is_s3fs

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: Protocols whose fsspec file implements a real transactional write (commit / discard).
TRANSACTIONAL_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})


class AtomicWrite:
    """A file being written that only appears under its final name when :meth:`commit` is called.

    :param fs: the filesystem to write to.
    :param path: the final name.
    :param transactional: use fsspec's transactional write (see :data:`TRANSACTIONAL_PROTOCOLS`), else a
        temporary sibling renamed on commit.
    :param block_size: the writer's buffer / multipart part size; ``None`` uses the backend's default (S3: 8 MiB).
    """

    def __init__(self, fs: AbstractFileSystem, path: str, *, transactional: bool, block_size: int | None) -> None:
        self.fs = fs
        self.path = path
        kwargs: dict[str, Any] = {"block_size": block_size} if block_size else {}
        self._temp: str | None
        self._file: Any
        if transactional and is_s3fs(fs):
            self._temp = None
            self._file = S3MultipartFile(fs, path, part_size=block_size)
        elif transactional:
            self._temp = None
            self._file = fs.open(path, "wb", autocommit=False, **kwargs)
        else:
            parent, name = posixpath.split(path)
            self._temp = posixpath.join(parent, f".{name}.{uuid.uuid4().hex[:16]}.partial")
            self._file = fs.open(self._temp, "wb", **kwargs)
        self._finished = False

    def write(self, data: bytes) -> None:
        """Append ``data`` to the (not yet visible) file."""
        self._file.write(data)

    def commit(self) -> None:
        """Make the object appear under its final name (on failure, the write is discarded)."""
        if self._finished:
            raise RuntimeError(f"write to {self.path} already finished")
        try:
            self._file.close()
            if self._temp is None:
                self._file.commit()
            else:
                self.fs.mv(self._temp, self.path)
        except BaseException:
            self.discard()
            raise
        self._finished = True
        self._forget()

    def discard(self) -> None:
        """Throw the write away, leaving nothing behind; a no-op once committed or discarded."""
        if self._finished:
            return
        self._finished = True
        try:
            if self._temp is None:
                self._file.discard()
                # Closing would first flush the buffered tail to the backend (for s3fs, into a brand-new
                # multipart upload when none was started yet) only for it to be thrown away.
                self._file.closed = True
            else:
                with suppress(Exception):
                    self._file.close()
                with suppress(FileNotFoundError):
                    self.fs.rm_file(self._temp)
        finally:
            self._forget()

    def _forget(self) -> None:
        # fsspec registers every autocommit=False file with the filesystem's (cached, shared) transaction;
        # ours is finished, so a later transaction on the same filesystem must not see it.
        if self._temp is None:
            with suppress(ValueError, AttributeError):
                self.fs.transaction.files.remove(self._file)
