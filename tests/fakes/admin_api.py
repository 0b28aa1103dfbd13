"""A fake OpenAI platform: the Admin API (service accounts, project API keys, admin keys) plus
the normal ``/v1/...`` endpoints of :mod:`fakes.openai_upstream`, over real HTTPS on 127.0.0.1.

Model endpoints accept only keys that are valid *now*: a deleted service account's key stops
working at once, and every accepted use moves that key's ``last_used_at``. Responses and error
bodies follow OpenAI's shapes. Keys are generated at run time.

Local demo (prints the steps; Ctrl-C to stop)::

    PYTHONPATH=tests .venv/bin/python -m fakes.admin_api --dir /tmp/kg-demo
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

from fakes.openai_upstream import _VK_RE, FakeOpenAI, _Handler, incorrect_key_message
from keyguard.domain.keys import generate_openai_style_key

_SA = re.compile(r"/v1/organization/projects/([^/]+)/service_accounts(?:/([^/]+))?")
_KEYS = re.compile(r"/v1/organization/projects/([^/]+)/api_keys(?:/([^/]+))?")
_ADMIN = re.compile(r"/v1/organization/admin_api_keys(?:/([^/]+))?")


def _err(message: str, code: str | None = None, type_: str = "invalid_request_error") -> Any:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _redacted(value: str) -> str:
    return f"{value[:6]}...{value[-4:]}"


@dataclass
class FakeKey:
    id: str
    value: str = field(repr=False)
    name: str
    created_at: int
    owner_type: str  # "service_account" | "user"
    owner_id: str
    owner_name: str
    last_used_at: int | None = None
    project_id: str = ""


@dataclass
class FakeAccount:
    id: str
    name: str
    created_at: int
    key: FakeKey
    role: str = "member"

    def doc(self) -> dict[str, Any]:
        return {
            "object": "organization.project.service_account",
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
        }


class FakeOpenAIPlatform(FakeOpenAI):
    """The fake platform; ``with FakeOpenAIPlatform(ca) as p: p.base_url``."""

    def __init__(self, ca: trustme.CA | None, project_id: str = "proj_keyguardtest") -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.projects: dict[str, dict[str, FakeAccount]] = {project_id: {}}
        self.user_keys: dict[str, list[FakeKey]] = {project_id: []}
        self.admin_keys: dict[str, FakeKey] = {}
        self.forced_401: set[str] = set()  # keys the model endpoints reject although valid
        self.fail_create = 0  # how many upcoming service-account creations answer 500
        self.fail_delete = 0  # how many upcoming service-account deletions answer 500
        self.admin_calls: list[tuple[str, str]] = []
        self.rejected: list[str] = []  # paths of model requests refused with 401
        self.project_id = project_id
        super().__init__(ca, accepted_keys=[])
        self._server.RequestHandlerClass = _PlatformHandler

    # -- state, also used directly by tests ("the dashboard") -----------------------------

    @property  # type: ignore[override]
    def accepted_keys(self) -> list[str]:
        with self._lock:
            return [a.key.value for p in self.projects.values() for a in p.values()] + [
                k.value for ks in self.user_keys.values() for k in ks
            ]

    @accepted_keys.setter
    def accepted_keys(self, value: list[str]) -> None:
        pass

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):04d}{secrets.token_hex(6)}"

    def new_admin_key(self, name: str = "bootstrap") -> str:
        with self._lock:
            value = generate_openai_style_key("admin")
            kid = self._id("key_")
            now = int(time.time())
            self.admin_keys[value] = FakeKey(kid, value, name, now, "user", "user_1", "owner")
            return value

    def add_service_account(self, name: str, project: str | None = None) -> FakeAccount:
        with self._lock:
            project = project or self.project_id
            now = int(time.time())
            aid = self._id("svc_acct_")
            key = FakeKey(
                self._id("key_"),
                generate_openai_style_key("svcacct"),
                "Secret Key",
                now,
                "service_account",
                aid,
                name,
                project_id=project,
            )
            account = FakeAccount(aid, name, now, key)
            self.projects[project][aid] = account
            return account

    def add_user_key(self, project: str | None = None) -> FakeKey:
        with self._lock:
            project = project or self.project_id
            key = FakeKey(
                self._id("key_"),
                generate_openai_style_key("proj"),
                "My key",
                int(time.time()),
                "user",
                "user_1",
                "someone",
                project_id=project,
            )
            self.user_keys[project].append(key)
            return key

    def delete_account(self, account_id: str, project: str | None = None) -> bool:
        with self._lock:
            return self.projects[project or self.project_id].pop(account_id, None) is not None

    def find_key(self, value: str) -> FakeKey | None:
        with self._lock:
            for p in self.projects.values():
                for a in p.values():
                    if a.key.value == value:
                        return a.key
            for ks in self.user_keys.values():
                for k in ks:
                    if k.value == value:
                        return k
        return None

    def use(self, value: str) -> bool:
        """A model request with ``value``: valid now? (moves ``last_used_at``)"""
        key = self.find_key(value)
        if key is None or value in self.forced_401:
            return False
        key.last_used_at = int(time.time())
        return True

    def account_names(self) -> list[str]:
        with self._lock:
            return [a.name for a in self.projects[self.project_id].values()]


class _PlatformHandler(_Handler):
    def _route(self, body: bytes) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/v1/organization/"):
            self._admin(path, body)
            return
        super()._route(body)

    def _bearer(self) -> str:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else ""

    def _check(self, body: bytes) -> bool:  # model endpoints: only currently valid keys
        fake: FakeOpenAIPlatform = self.server.fake  # type: ignore[assignment]
        fake.requests.append({"method": self.command, "path": self.path})
        if _VK_RE.search(str(self.headers).encode()) or _VK_RE.search(body):
            fake.violations.append(f"virtual key reached the upstream on {self.path}")
        if not fake.use(self._bearer()):
            fake.rejected.append(self.path)
            self._json(401, _err(incorrect_key_message(self._bearer()), "invalid_api_key"))
            return False
        project = self.headers.get("OpenAI-Project")
        key = fake.find_key(self._bearer())
        if project and key is not None and key.project_id and key.project_id != project:
            fake.rejected.append(self.path)  # as OpenAI does: the key is another project's
            self._json(
                401,
                _err(
                    "OpenAI-Project header should match project for API key", "mismatched_project"
                ),
            )
            return False
        return True

    def _admin(self, path: str, body: bytes) -> None:
        fake: FakeOpenAIPlatform = self.server.fake  # type: ignore[assignment]
        fake.admin_calls.append((self.command, path))
        key = self._bearer()
        if key not in fake.admin_keys:
            if fake.find_key(key) is not None:
                self._json(
                    403,
                    _err(
                        "You have insufficient permissions for this operation.",
                        "insufficient_permissions",
                    ),
                )
            else:
                self._json(401, _err(incorrect_key_message(self._bearer()), "invalid_api_key"))
            return
        fake.admin_keys[key].last_used_at = int(time.time())
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        with fake._lock:
            if m := _SA.fullmatch(path):
                self._accounts(fake, m.group(1), m.group(2), body, query)
            elif m := _KEYS.fullmatch(path):
                self._api_keys(fake, m.group(1), m.group(2), query)
            elif m := _ADMIN.fullmatch(path):
                self._admin_keys(fake, m.group(1), body)
            else:
                self._json(404, _err(f"Invalid URL ({self.command} {path})"))

    def _page(self, items: list[dict[str, Any]], query: dict[str, str]) -> None:
        limit = min(int(query.get("limit", "20")), 100)
        after = query.get("after")
        if after:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        self._json(
            200,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            },
        )

    def _accounts(
        self,
        fake: FakeOpenAIPlatform,
        project: str,
        aid: str | None,
        body: bytes,
        query: dict[str, str],
    ) -> None:
        accounts = fake.projects.get(project)
        if accounts is None:
            self._json(404, _err(f"No such project: {project}"))
            return
        if self.command == "POST" and aid is None:
            if fake.fail_create > 0:
                fake.fail_create -= 1
                self._json(500, _err("The server had an error.", None, "server_error"))
                return
            name = str(json.loads(body or b"{}").get("name", ""))
            if not name:
                self._json(400, _err("Missing required parameter: 'name'."))
                return
            a = fake.add_service_account(name, project)
            self._json(
                200,
                {
                    **a.doc(),
                    "api_key": {
                        "object": "organization.project.service_account.api_key",
                        "value": a.key.value,
                        "name": a.key.name,
                        "created_at": a.key.created_at,
                        "id": a.key.id,
                    },
                },
            )
        elif self.command == "GET" and aid is None:
            self._page([a.doc() for a in accounts.values()], query)
        elif aid is not None and aid not in accounts:
            self._json(404, _err(f"No such service account: {aid}"))
        elif self.command == "GET" and aid is not None:
            self._json(200, accounts[aid].doc())
        elif self.command == "DELETE" and aid is not None:
            if fake.fail_delete > 0:
                fake.fail_delete -= 1
                self._json(500, _err("The server had an error.", None, "server_error"))
                return
            del accounts[aid]
            self._json(
                200,
                {
                    "object": "organization.project.service_account.deleted",
                    "id": aid,
                    "deleted": True,
                },
            )
        else:
            self._json(405, _err("Method not allowed"))

    def _api_keys(
        self, fake: FakeOpenAIPlatform, project: str, kid: str | None, query: dict[str, str]
    ) -> None:
        if project not in fake.projects:
            self._json(404, _err(f"No such project: {project}"))
            return
        keys = [a.key for a in fake.projects[project].values()] + fake.user_keys[project]
        docs = []
        for k in keys:
            owner: dict[str, Any] = {"type": k.owner_type}
            if k.owner_type == "service_account":
                owner["service_account"] = {
                    "object": "organization.project.service_account",
                    "id": k.owner_id,
                    "name": k.owner_name,
                    "created_at": k.created_at,
                    "role": "member",
                }
            else:
                owner["user"] = {
                    "object": "organization.project.user",
                    "id": k.owner_id,
                    "name": k.owner_name,
                    "email": "owner@example.invalid",
                    "role": "owner",
                    "added_at": k.created_at,
                }
            docs.append(
                {
                    "object": "organization.project.api_key",
                    "redacted_value": _redacted(k.value),
                    "name": k.name,
                    "created_at": k.created_at,
                    "last_used_at": k.last_used_at,
                    "id": k.id,
                    "owner": owner,
                }
            )
        if kid is not None:
            match = [d for d in docs if d["id"] == kid]
            if match:
                self._json(200, match[0])
            else:
                self._json(404, _err(f"No such API key: {kid}"))
            return
        self._page(docs, query)

    def _admin_keys(self, fake: FakeOpenAIPlatform, kid: str | None, body: bytes) -> None:
        if self.command == "POST" and kid is None:
            req = json.loads(body or b"{}")
            value = fake.new_admin_key(str(req.get("name", "admin key")))
            k = fake.admin_keys[value]
            expires = req.get("expires_in_seconds")
            self._json(
                200,
                {
                    "object": "organization.admin_api_key",
                    "id": k.id,
                    "name": k.name,
                    "redacted_value": _redacted(value),
                    "value": value,
                    "created_at": k.created_at,
                    "last_used_at": None,
                    "expires_at": k.created_at + int(expires) if expires else None,
                    "owner": {
                        "type": "user",
                        "object": "organization.user",
                        "id": "user_1",
                        "name": "owner",
                        "role": "owner",
                        "created_at": k.created_at,
                    },
                },
            )
        elif self.command == "DELETE" and kid is not None:
            for value, k in list(fake.admin_keys.items()):
                if k.id == kid:
                    del fake.admin_keys[value]
                    self._json(
                        200,
                        {
                            "id": kid,
                            "object": "organization.admin_api_key.deleted",
                            "deleted": True,
                        },
                    )
                    return
            self._json(404, _err(f"No such admin API key: {kid}"))
        else:
            self._json(405, _err("Method not allowed"))


def _demo() -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI platform for a local demo.")
    parser.add_argument("--dir", type=Path, required=True, help="where to write ca.pem and keys")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(args.dir / "ca.pem"))
    with FakeOpenAIPlatform(ca, project_id="proj_demo") as p:
        first = p.add_service_account("first-key")
        for name, value in (("admin.key", p.new_admin_key()), ("project.key", first.key.value)):
            path = args.dir / name
            path.touch(mode=0o600)
            path.write_text(value + "\n")
        d = args.dir
        print(f"""fake OpenAI platform on {p.base_url} (project proj_demo)

export KEYGUARD_HOME={d}/home KEYGUARD_UPSTREAM_CA_BUNDLE={d}/ca.pem
keyguard init
keyguard upstream add default --base-url {p.base_url} --project proj_demo --stdin < {d}/project.key
keyguard upstream admin-key set default --project-id proj_demo --stdin \\
    --current-service-account {first.id} < {d}/admin.key
keyguard rotate default --grace 0s && keyguard upstream show default
keyguard upstream reconcile default

Ctrl-C stops the server.""")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    _demo()
