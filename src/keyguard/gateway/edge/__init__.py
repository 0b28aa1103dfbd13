"""The native data plane: the ``keyguard-edge`` binary in front of the Python core.

See docs/edge.md. :mod:`.state` builds what the edge is told, :mod:`.records` takes in what it
reports, :mod:`.supervisor` runs the process, :mod:`.run` wires it to a core (threads for tests
and embedding, processes for ``keyguard serve --data-plane native``).
"""
