"""The client's IP address: the socket peer, or — behind trusted proxies only — the forwarded one.

``X-Forwarded-For`` and ``Forwarded`` (RFC 7239) are walked right to left; hops inside the
configured trusted networks are skipped and the first untrusted address is the client. A header
sent by an untrusted peer is ignored entirely, so spoofing it changes nothing. When both headers
are present they must agree, otherwise the request is refused (an attacker behind a proxy that
only maintains one of them could otherwise choose the other). IPv4-mapped IPv6 addresses
(``::ffff:10.0.0.1``) are normalised to IPv4.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from keyguard.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BadForwarding(ValueError):
    """Forwarding headers from a trusted proxy that cannot be interpreted safely."""


def normalise_ip(text: str) -> IPAddress:
    """Parse an address (brackets, zone id and, for ``Forwarded``, a port allowed)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.index("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # IPv4 with port
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    nets = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {cidr!r} is not a CIDR or address") from exc
    return tuple(nets)


def _xff_chain(values: Sequence[bytes]) -> list[str]:
    return [p.strip() for v in values for p in v.decode("latin-1").split(",") if p.strip()]


def _forwarded_chain(values: Sequence[bytes]) -> list[str]:
    chain = []
    for v in values:
        for element in v.decode("latin-1").split(","):
            found = None
            for pair in element.split(";"):
                name, _, val = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    found = val.strip()
            if found is None:
                raise BadForwarding("Forwarded element without for=")
            chain.append(found)
    return chain


class ClientIpResolver:
    """Resolve the client IP of a request given the peer address and its headers."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted = parse_networks(trusted_proxies)
        # peer text -> (address, trusted, normalised text)
        self._peers: dict[str, tuple[IPAddress, bool, str]] = {}

    def _peer(self, peer: str) -> tuple[IPAddress, bool, str]:
        hit = self._peers.get(peer)
        if hit is None:
            ip = normalise_ip(peer)
            hit = (ip, self.is_trusted(ip), str(ip))
            if len(self._peers) >= 65536:
                self._peers.clear()
            self._peers[peer] = hit
        return hit

    def is_trusted(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._trusted)

    def resolve(self, peer: str, headers: Sequence[tuple[bytes, bytes]]) -> IPAddress:
        return self.resolve_with_text(peer, headers)[0]

    def resolve_with_text(
        self, peer: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> tuple[IPAddress, str]:
        """The client address and its text form (cached for direct peers)."""
        ip, trusted, text = self._peer(peer)
        if not trusted:
            return ip, text
        client = self._resolve_forwarded(ip, headers)
        return client, str(client)

    def _resolve_forwarded(
        self, ip: IPAddress, headers: Sequence[tuple[bytes, bytes]]
    ) -> IPAddress:
        xff = [v for k, v in headers if k == b"x-forwarded-for"]
        fwd = [v for k, v in headers if k == b"forwarded"]
        if not xff and not fwd:
            return ip
        results = []
        if xff:
            results.append(self._walk(_xff_chain(xff), ip))
        if fwd:
            results.append(self._walk(_forwarded_chain(fwd), ip))
        if len(results) == 2 and results[0] != results[1]:
            raise BadForwarding("X-Forwarded-For and Forwarded disagree")
        return results[0]

    def _walk(self, chain: list[str], peer: IPAddress) -> IPAddress:
        client = peer
        for entry in reversed(chain):
            try:
                hop = normalise_ip(entry)
            except ValueError:
                raise BadForwarding("unparseable address in forwarding header") from None
            client = hop
            if not self.is_trusted(hop):
                return hop
        return client
