"""A synchronous botocore S3 client set up as an s3fs filesystem's own (asynchronous) client is.

s3fs runs every request on its single event-loop thread, so the hashing botocore does per request (the SigV4
payload SHA-256 over plain http, the flexible CRC32 checksum) runs one request after another. A synchronous
client used from a pool of threads hashes in parallel: ``hashlib`` and ``zlib`` release the GIL.

Nothing is configured twice. The client is built from the filesystem's live aiobotocore client, the one s3fs
built from the Amazon provider's connection (or its own arguments):

* region and client config (timeouts, retries, proxies, addressing style, checksum settings, ``UNSIGNED`` for
  an anonymous filesystem): that client's resolved ``meta.region_name`` and ``meta.config``;
* endpoint, ``use_ssl``, ``verify``: the arguments s3fs passes to ``create_client`` (``endpoint_url``,
  ``use_ssl``, ``client_kwargs``);
* credentials: that client's own credentials object, read on s3fs's event loop each time a request is signed,
  so a refreshable credential (an assumed role, ...) is refreshed in one place, by aiobotocore.

Request handlers registered on the filesystem's client (the Amazon provider's ``signer`` option registers a
``before-sign`` handler and turns SigV4 off) are not carried over: :func:`can_mirror` says whether the filesystem
has any such custom signing, and the caller then keeps to s3fs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, Credentials, ReadOnlyCredentials

#: Arguments a client gets from outside its credentials (the ``aws_*`` keys come from the fs client's signer).
_CREDENTIAL_KEYS = frozenset({"aws_access_key_id", "aws_secret_access_key", "aws_session_token"})


def can_mirror(fs: Any) -> bool:
    """Whether :func:`sync_s3_client` reproduces ``fs``'s requests: SigV4 signing, or an anonymous filesystem.

    An unsigned config on a filesystem that is not anonymous means a custom signer hooked into the fs
    client's events (the Amazon provider's ``signer`` service config), which a new client would not have.
    """
    return bool(fs.anon) or fs.s3.meta.config.signature_version is not UNSIGNED


def sync_s3_client(fs: Any, bucket: str, *, max_pool_connections: int) -> Any:
    """A botocore S3 client for ``bucket`` set up as s3fs's client for it, pooling ``max_pool_connections``.

    :param fs: the s3fs filesystem.
    :param bucket: the bucket the client is for (s3fs may keep a client per bucket region).
    :param max_pool_connections: at least this many pooled connections (one per thread using the client).
    """
    fs.connect()
    source = _run(fs, fs.get_s3(bucket))
    meta = source.meta
    options = {name: getattr(meta.config, name) for name in Config.OPTION_DEFAULTS}
    options.pop("user_agent")  # aiobotocore's: let botocore name itself
    options["max_pool_connections"] = max(options["max_pool_connections"] or 0, max_pool_connections)

    session = botocore.session.Session()
    # The S3 service model is already loaded (and cached) by the fs session's loader: share it, not a second copy.
    session.register_component("data_loader", fs.session.get_component("data_loader"))
    session.register_component("credential_provider", CredentialResolver([_LoopCredentialProvider(fs, source)]))
    client_kwargs = {"endpoint_url": fs.endpoint_url, "use_ssl": fs.use_ssl, **fs.client_kwargs}
    client_kwargs = {k: v for k, v in client_kwargs.items() if v is not None and k not in _CREDENTIAL_KEYS}
    client_kwargs["region_name"] = meta.region_name
    return session.create_client("s3", config=Config(**options), **client_kwargs)


def _run(fs: Any, coroutine: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coroutine, fs.loop).result()


class _LoopCredentials(Credentials):
    """The fs client's (aiobotocore) credentials, frozen on s3fs's event loop for each request signed."""

    def __init__(self, fs: Any, credentials: Any) -> None:
        super().__init__(access_key="", secret_key="", method="s3fs")
        self._fs = fs
        self._credentials = credentials

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        frozen: ReadOnlyCredentials = _run(self._fs, self._credentials.get_frozen_credentials())
        return frozen


class _LoopCredentialProvider(CredentialProvider):
    METHOD = "s3fs"

    def __init__(self, fs: Any, client: Any) -> None:
        super().__init__()
        self._fs = fs
        self._client = client

    def load(self) -> Credentials | None:
        credentials = self._client._get_credentials()
        return None if credentials is None else _LoopCredentials(self._fs, credentials)
