"""``keyguard rotate``: rotate upstream keys through the OpenAI Admin API, resume, run schedules.

Also the CLI's rotation wiring shared with ``keyguard upstream rotate|revoke|reconcile``: the
pinned, verified endpoint of a credential, and the fault-injection hook the crash tests use
(``KEYGUARD_FAULT_KILL_AFTER=<step>`` makes the process SIGKILL itself right after that step).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from keyguard.cli.common import (
    actor,
    emit,
    json_option,
    open_vault,
    parse_duration,
    settings_from,
    table,
)
from keyguard.errors import ConfigError
from keyguard.vault.views import format_duration, iso

if TYPE_CHECKING:
    from keyguard.config import Settings
    from keyguard.domain.records import UpstreamCredential
    from keyguard.domain.rotation import UpstreamRotation
    from keyguard.rotation.admin_api import Endpoint
    from keyguard.rotation.upstream import UpstreamRotator
    from keyguard.vault import Vault

FAULT_ENV = "KEYGUARD_FAULT_KILL_AFTER"


def connector(settings: Settings) -> Callable[[UpstreamCredential], Endpoint]:
    """Endpoint factory: the credential's base URL, TLS verified against the system store or
    ``upstream_ca_bundle``."""
    from keyguard.rotation.admin_api import Endpoint, tls_context

    ctx = tls_context(settings.upstream_ca_bundle)

    def connect(cred: UpstreamCredential) -> Endpoint:
        return Endpoint(
            cred.base_url, ssl_context=ctx, allow_insecure_loopback=cred.allow_insecure_loopback
        )

    return connect


def fault_hook() -> Callable[[str], None] | None:
    """The crash-test hook from ``KEYGUARD_FAULT_KILL_AFTER`` (``None`` when unset)."""
    target = os.environ.get(FAULT_ENV)
    if not target:
        return None

    def hook(step: str) -> None:
        if step == target:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def span(text: str, *, setting: str) -> timedelta:
    """A duration that may be zero (``0s``)."""
    if text.strip().lower() in ("0", "0s"):
        return timedelta(0)
    return parse_duration(text, setting=setting)


def make_rotator(
    settings: Settings, vault: Vault, *, grace: str = "1h", max_grace: str = "24h"
) -> UpstreamRotator:
    from keyguard.rotation.upstream import RotationPolicy, UpstreamRotator

    policy = RotationPolicy(
        grace=span(grace, setting="--grace"), max_grace=span(max_grace, setting="--max-grace")
    )
    return UpstreamRotator(
        vault,
        connector(settings),
        policy=policy,
        actor=actor(),
        source="cli",
        after_step=fault_hook(),
    )


def rotation_dict(r: UpstreamRotation) -> dict[str, Any]:
    return {
        "upstream": r.upstream,
        "rotation_id": r.rotation_id,
        "state": r.state.value,
        "old_version": r.old_version,
        "new_version": r.new_version,
        "service_account": r.new_account_id,
        "started_at": iso(r.started_at),
        "finished_at": iso(r.finished_at),
        "retires_after": iso(r.finished_at + r.grace) if r.finished_at else None,
        "retires_by": iso(r.finished_at + r.max_grace) if r.finished_at else None,
        "grace": format_duration(r.grace) or "0s",
        "detail": r.detail,
    }


def _show(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("nothing to rotate")
        return
    table(
        ("UPSTREAM", "ROTATION", "STATE", "OLD", "NEW", "RETIRES AFTER", "DETAIL"),
        [
            (
                d["upstream"],
                d["rotation_id"],
                d["state"],
                d["old_version"],
                d["new_version"],
                d["retires_after"] or "-",
                d["detail"],
            )
            for d in rows
        ],
    )


@click.command("rotate")
@click.argument("names", nargs=-1)
@click.option("--resume", is_flag=True, help="Continue interrupted or waiting rotations.")
@click.option(
    "--due",
    is_flag=True,
    help="Resume, then rotate every upstream and virtual key past its max age.",
)
@click.option("--abort", is_flag=True, help="Give up a rotation that has not switched yet.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    help="Keep the old upstream key at least this long (0s: retire at once if unused).",
)
@click.option(
    "--max-grace",
    default="24h",
    show_default=True,
    help="Retire the old upstream key after this long even if still used.",
)
@click.option(
    "--key-grace",
    default="24h",
    show_default=True,
    help="With --due: how long a rotated virtual key's old token keeps working.",
)
@click.option("--wait", is_flag=True, help="Wait until the old upstream keys are retired.")
@click.option("--poll", default="10s", show_default=True, help="Check interval for --wait.")
@json_option
@click.pass_context
def rotate_cmd(
    ctx: click.Context,
    names: tuple[str, ...],
    resume: bool,
    due: bool,
    abort: bool,
    grace: str,
    max_grace: str,
    key_grace: str,
    wait: bool,
    poll: str,
    as_json: bool,
) -> None:
    """Rotate upstream keys NAMES through the OpenAI Admin API (create -> test -> finish ->
    retire), or continue with --resume, or run the schedule with --due.

    Needs an admin key per upstream ('keyguard upstream admin-key set NAME'). Without one,
    rotate by hand with 'keyguard upstream rotate NAME'.
    """
    if (due and (names or resume or abort)) or (abort and (resume or not names)):
        raise ConfigError("give NAMES, NAMES --resume|--abort, --resume or --due")
    if not names and not resume and not due:
        raise ConfigError("name the upstream credentials to rotate, or give --resume or --due")
    settings = settings_from(ctx)
    vault = open_vault(settings)
    tokens: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    compromised: list[dict[str, Any]] = []
    try:
        rotator = make_rotator(settings, vault, grace=grace, max_grace=max_grace)
        results: list[UpstreamRotation] = []
        if due:
            from keyguard.rotation.schedule import run_due

            outcome = run_due(
                rotator,
                key_grace=span(key_grace, setting="--key-grace"),
                actor=actor(),
                source="cli",
            )
            results = outcome.aborted + outcome.resumed + outcome.started
            problems = outcome.errors
            problems += [
                (m.name, "due: " + m.reason) for m in outcome.manual if m.compromised is None
            ]
            problems += [(m.name, "COMPROMISED: " + m.reason) for m in outcome.compromised_manual]
            compromised = (
                [
                    {
                        "upstream": m.name,
                        "version": m.compromised_version,
                        "label": m.compromised.value if m.compromised else None,
                        "compromised_at": iso(m.due_at),
                        "action": "manual",
                        "detail": m.reason,
                    }
                    for m in outcome.compromised_manual
                ]
                + [
                    {
                        "upstream": name,
                        "version": e.revoked_version,
                        "label": "CURRENT",
                        "compromised_at": None,
                        "action": "emergency_revoke",
                        "detail": f"version {e.new_version} is CURRENT; {e.reminder}",
                    }
                    for name, e in outcome.emergency
                ]
                + [
                    {
                        "upstream": name,
                        "version": v,
                        "label": None,
                        "compromised_at": None,
                        "action": "service_account_deleted",
                        "detail": "the leaked key's service account was deleted",
                    }
                    for name, v in outcome.cut_off
                ]
            )
            tokens = [
                {"key_id": k.key_id, "name": k.name, "key": s.reveal()} for k, s in outcome.keys
            ]
        elif abort:
            results = [rotator.abort(n) for n in names]
        elif resume:
            targets = names or tuple(r.upstream for r in rotator.in_flight())
            results = [r for r in (rotator.resume(n) for n in targets) if r is not None]
        else:
            results = [rotator.start(n) for n in names]
        if wait:
            results = _wait(rotator, results, parse_duration(poll, setting="--poll"))
    finally:
        vault.close()
    rows = [rotation_dict(r) for r in results]
    if as_json:
        import json

        # new virtual-key tokens are shown whole, once, like 'key create --json'
        click.echo(
            json.dumps(
                {
                    "rotations": rows,
                    "keys": tokens,
                    "problems": [list(p) for p in problems],
                    "compromised": compromised,
                },
                indent=2,
            )
        )
    else:
        if rows or not compromised:
            emit(False, rows, lambda: _show(rows))
        for c in compromised:
            if c["action"] == "emergency_revoke":
                click.echo(
                    f"{c['upstream']}: compromised version {c['version']} replaced"
                    f" (emergency revoke): {c['detail']}"
                )
            elif c["action"] == "service_account_deleted":
                click.echo(f"{c['upstream']}: compromised version {c['version']}: {c['detail']}")
        for t in tokens:
            click.echo(
                f"virtual key {t['key_id']} ({t['name']!r}) rotated; new key (shown once):",
                err=True,
            )
            click.echo(t["key"])
        for name, message in problems:
            click.echo(f"{name}: {message}", err=True)
    # errors, and compromised keys still in use that keyguard could not replace, fail the run
    if any(p for p in problems if not p[1].startswith("due: ")):
        ctx.exit(1)


def _wait(
    rotator: UpstreamRotator, results: list[UpstreamRotation], poll: timedelta
) -> list[UpstreamRotation]:
    from keyguard.domain.rotation import RotationState

    out = []
    for r in results:
        while r.state is RotationState.FINISHED:
            time.sleep(poll.total_seconds())
            nxt = rotator.resume(r.upstream)
            if nxt is None:
                break
            r = nxt
        out.append(r)
    return out


def background_rotation(settings: Settings, vault: Vault, *, interval: float = 300.0) -> Any:
    """For ``keyguard serve``: resume interrupted rotations and rotate due upstream keys every
    ``interval`` seconds on a daemon thread (one replica at a time, by lease). Returns the
    running :class:`~keyguard.rotation.schedule.PeriodicRotation`; call ``stop()`` on exit."""
    from keyguard.rotation.schedule import PeriodicRotation

    return PeriodicRotation(make_rotator(settings, vault), interval).start()
