"""keyguard's admin API under ``/admin/``: virtual keys, upstreams and the audit log as JSON.

* :mod:`.routes` — the one route table (method, path, scope, handler, schemas);
* :mod:`.handlers` — the operations over the vault (views shared with the CLI's ``--json``);
* :mod:`.api` — authentication (admin tokens), scopes, dispatch off the event loop, audit;
* :mod:`.openapi` — the OpenAPI 3.1 document served at ``/admin/openapi.json``;
* :mod:`.setup` — wiring into ``keyguard serve``.
"""

from keyguard.gateway.admin.api import AdminApi
from keyguard.gateway.admin.handlers import Services
from keyguard.gateway.admin.openapi import document

__all__ = ["AdminApi", "Services", "document"]
