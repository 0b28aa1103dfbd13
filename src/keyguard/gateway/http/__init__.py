"""Wire level: HTTP/1.1 over asyncio protocols, parsed by httptools; the one swappable stack.

Nothing outside this package touches sockets, TLS objects or the parser.
"""
