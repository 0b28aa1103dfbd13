"""``keyguard audit``: list and verify the hash-chained audit log."""

from __future__ import annotations

import sys

import click

from keyguard.cli.common import emit, json_option, open_vault, settings_from, table
from keyguard.vault.views import record_dict


@click.group("audit")
def audit() -> None:
    """The audit log: who did what to which key, from where."""


@audit.command("list")
@click.option("--after", "after_seq", type=click.IntRange(min=0), default=0,
              help="Only records after this sequence number.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many.")
@click.option("--tail", type=click.IntRange(min=1), default=None, help="Only the last N records.")
@click.option("--action", "actions", multiple=True, help="Only these actions (repeatable).")
@json_option
@click.pass_context
def list_(ctx: click.Context, after_seq: int, limit: int | None, tail: int | None,
          actions: tuple[str, ...], as_json: bool) -> None:
    """Show audit records, oldest first."""
    vault = open_vault(settings_from(ctx))
    try:
        records = vault.audit.list(after_seq=after_seq, limit=None if actions else limit)
    finally:
        vault.close()
    if actions:
        records = [r for r in records if r.action in actions][: limit or None]
    if tail:
        records = records[-tail:]
    data = [record_dict(r) for r in records]

    def human() -> None:
        table(("SEQ", "TIME", "ACTION", "ACTOR", "SUBJECT", "SOURCE", "OUTCOME"),
              [(d["seq"], d["time"], d["action"], d["actor"], d["subject"], d["source"],
                d["outcome"]) for d in data])

    emit(as_json, data, human)


@audit.command("verify")
@json_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check the hash chain: report edited, deleted, inserted or reordered records.

    Exit code 0 when the log is intact, 1 when tampering is found.
    """
    vault = open_vault(settings_from(ctx))
    try:
        report = vault.audit.verify()
    finally:
        vault.close()
    data = {
        "ok": report.ok,
        "records": report.count,
        "problems": [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in report.problems],
    }
    emit(as_json, data, lambda: click.echo(str(report)))
    if not report.ok:
        sys.exit(1)
