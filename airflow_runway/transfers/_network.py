"""Which addresses a transfer may connect to, checked after DNS resolution, on the very connection that is made.

A prediction's output URL comes from the API, and every redirect from whatever server answers it: without a
check, a URL (or a redirect) naming an internal address would make the worker fetch it and store the answer
(server-side request forgery). So each hop's host name is resolved once, every address it resolves to is
checked, and the connection goes to an address that was checked: the name is never resolved a second time,
which would let a DNS answer change in between (DNS rebinding). TLS still verifies the certificate against the
host name, and the ``Host`` header and SNI carry the name.

Refused unless ``allow_private_network`` is on: every address that is not globally routable (``ipaddress``'s
``is_global``): private (``10/8``, ``172.16/12``, ``192.168/16``), loopback (``127/8``, ``::1``), link-local
(``169.254/16``, the cloud metadata service, and ``fe80::/10``), unique-local IPv6 (``fc00::/7``), shared
(``100.64/10``), unspecified, reserved and documentation ranges, plus multicast. An IPv4-mapped IPv6 address
(``::ffff:127.0.0.1``) is judged as the IPv4 address it maps. A name with one refused address among several is
refused as a whole.

Through a proxy (``HTTPS_PROXY``/``HTTP_PROXY``, unless ``NO_PROXY`` matches) the proxy connects to the source:
the name is then checked as resolved here before the request, and the proxy, which resolves it again, should
refuse internal addresses itself. The connection to the proxy is not checked: the deployment configured it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family, create_connection

from airflow_runway.transfers._errors import DownloadRejectedError

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Every address, for ``allow_private_network=True``.
ANY_NETWORK: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
#: What the opt-in is called, for the messages.
OPT_IN = "allow_private_network=True (or [runway] allow_private_network = True)"

Resolver = Callable[..., Sequence[tuple[Any, ...]]]


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is a globally routable unicast address (see the module docstring for what is not)."""
    address = _unmapped(address)
    return address.is_global and not address.is_multicast


class AddressRefusedError(DownloadRejectedError):
    """A host resolves to an address the transfer may not connect to (not retried)."""


@dataclass(frozen=True)
class AddressPolicy:
    """The addresses a transfer may connect to: public ones, plus ``allowed_networks``.

    :param allowed_networks: non-public networks allowed anyway (:data:`ANY_NETWORK` for the opt-in).
    :param resolve: the resolver, ``socket.getaddrinfo``'s signature.
    """

    allowed_networks: tuple[IPNetwork, ...] = ()
    resolve: Resolver = field(default=socket.getaddrinfo, repr=False, compare=False)

    @classmethod
    def from_flag(cls, allow_private_network: bool) -> AddressPolicy:
        """Public addresses only, or every address when ``allow_private_network``."""
        return cls(allowed_networks=ANY_NETWORK if allow_private_network else ())

    def allows(self, address: IPAddress) -> bool:
        """Whether a connection to ``address`` is allowed."""
        address = _unmapped(address)
        if is_public_address(address):
            return True
        return any(address.version == net.version and address in net for net in self.allowed_networks)

    def resolve_checked(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """``getaddrinfo`` results for ``host`` (resolved once), after checking every address among them.

        :raises AddressRefusedError: when any of the addresses is not allowed.
        :raises socket.gaierror: when the name does not resolve.
        """
        infos = list(self.resolve(host, port, allowed_gai_family(), socket.SOCK_STREAM))
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if not self.allows(address):
                shown = host if host == str(address) else f"{host} (it resolves to {address})"
                raise AddressRefusedError(
                    f"Refusing to connect to {shown}: not a public address (private, loopback, link-local or "
                    f"reserved). Set {OPT_IN} to download from internal hosts."
                )
        return infos


class _CheckedConnection(HTTPConnection):
    """Connects only to an address its :class:`AddressPolicy` allowed, resolving the host exactly once."""

    address_policy: ClassVar[AddressPolicy]

    def _new_conn(self) -> socket.socket:
        if self.proxy is not None:
            return super()._new_conn()  # to the configured proxy; the target name was checked before the request
        try:
            infos = self.address_policy.resolve_checked(self._dns_host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        last: OSError | None = None
        for info in infos:
            try:
                return create_connection(
                    (info[4][0], self.port),
                    self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except OSError as error:
                last = error
        if isinstance(last, TimeoutError):
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")


class _CheckedHTTPSConnection(_CheckedConnection, HTTPSConnection):
    pass


class AddressCheckingAdapter(HTTPAdapter):
    """A ``requests`` adapter whose direct connections go through :class:`AddressPolicy` (mount it for both schemes).

    :param policy: the addresses allowed.
    """

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        self.policy = policy  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        policy = {"address_policy": self.policy}
        http = type("PolicyHTTPConnection", (_CheckedConnection,), policy)
        https = type("PolicyHTTPSConnection", (_CheckedHTTPSConnection,), policy)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("PolicyHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("PolicyHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
