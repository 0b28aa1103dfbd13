"""The secure gateway: an OpenAI-compatible proxy that swaps virtual keys for the real one.

Layout: :mod:`keyguard.gateway.http` is the wire level (HTTP/1.1 server and upstream client on
asyncio protocols + httptools, TLS contexts); everything else is the request pipeline
(:mod:`~keyguard.gateway.app`) and its single-concern parts (client IP, throttle, headers, paths,
body sniffing, credentials, forwarding, audit). :mod:`~keyguard.gateway.server` runs it.
"""

from keyguard.gateway.config import GatewayConfig

__all__ = ["GatewayConfig"]
