"""The HTTP environment of every client of this provider: proxies from the environment, never ``~/.netrc``.

The API clients (``requests`` in workers, ``aiohttp`` in triggers) and the transfer's download honour
``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` (and, for ``requests``, ``REQUESTS_CA_BUNDLE``), the
way ``requests`` reads them. They never read ``~/.netrc`` (or ``$NETRC``): both libraries would add its Basic
credentials for the host to our requests, which in ``bearer`` mode replaces the API key (``requests``) or makes
every request fail (``aiohttp`` refuses ``auth`` together with an ``Authorization`` header), and would hand a
machine's stored credentials to any host a download reaches.
"""

from __future__ import annotations

import requests
from requests.utils import get_environ_proxies, select_proxy


class _NoAmbientAuth(requests.auth.AuthBase):
    """A session auth that adds nothing: requests reads ``~/.netrc`` only for a request that has no auth at all."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


def requests_session() -> requests.Session:
    """A ``requests.Session`` that honours the proxy and CA-bundle variables but never reads ``~/.netrc``."""
    session = requests.Session()
    # trust_env stays on (proxies, NO_PROXY, REQUESTS_CA_BUNDLE); a session auth turns off only its netrc lookup.
    session.auth = _NoAmbientAuth()
    return session


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``None`` when none, or ``NO_PROXY`` matches), as requests picks it.

    For ``aiohttp``, whose own ``trust_env`` would also read ``~/.netrc``: the session is built without it and each
    request is given this proxy.
    """
    return select_proxy(url, get_environ_proxies(url))
