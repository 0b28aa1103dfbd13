"""The audit log: append, redaction, pseudonyms, and verify() against every kind of tampering."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyguard.crypto.master import MasterKey
from keyguard.domain.audit import AuditEvent
from keyguard.domain.keys import generate_openai_style_key
from keyguard.domain.secret import Secret
from keyguard.storage.sqlite import SqliteStore
from keyguard.vault import Vault
from vault.helpers import Clock

N = 8  # records in the log under test (vault.create writes seq 1)


@pytest.fixture
def log_vault(vault: Vault, clock: Clock) -> Vault:
    for i in range(2, N + 1):
        clock.advance(seconds=1)
        vault.audit.append(AuditEvent(f"test.{i}", "tester", f"s{i}", "test", details={"i": i}))
    return vault


@pytest.fixture
def db(db_path: Path, log_vault: Vault) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db_path, isolation_level=None)
    yield conn
    conn.close()


def problems(v: Vault) -> list[tuple[int, str]]:
    report = v.audit.verify()
    assert report.ok is (not report.problems)
    return [(p.seq, p.kind) for p in report.problems]


def renumber(db: sqlite3.Connection, after: int, delta: int) -> None:
    db.execute("UPDATE audit_log SET seq = seq + 100000 WHERE seq > ?", (after,))
    db.execute("UPDATE audit_log SET seq = seq - 100000 + ? WHERE seq > 100000", (delta,))


def test_intact_log_verifies(log_vault: Vault) -> None:
    report = log_vault.audit.verify()
    assert report.ok and report.count == N
    assert str(report) == f"audit log intact: {N} records"
    assert [r.seq for r in log_vault.audit.list()] == list(range(1, N + 1))


def test_edited_record(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute("UPDATE audit_log SET details = ? WHERE seq = 4", (json.dumps({"i": 40}),))
    assert problems(log_vault) == [(4, "edited")]


@pytest.mark.parametrize(
    "column,value",
    [("actor", "mallory"), ("outcome", "failure"), ("time", "2030-01-01T00:00:00+00:00")],
)
def test_edited_fields(db: sqlite3.Connection, log_vault: Vault, column: str, value: str) -> None:
    db.execute(f"UPDATE audit_log SET {column} = ? WHERE seq = 5", (value,))
    assert problems(log_vault) == [(5, "edited")]


def test_deleted_record_in_the_middle(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute("DELETE FROM audit_log WHERE seq = 3")
    assert problems(log_vault) == [(3, "deleted")]


def test_deleted_and_renumbered(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute("DELETE FROM audit_log WHERE seq = 3")
    renumber(db, 3, -1)
    db.execute("UPDATE audit_head SET seq = seq - 1")
    found = problems(log_vault)
    assert (3, "deleted") in found


def test_deleted_first_record(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute("DELETE FROM audit_log WHERE seq = 1")
    assert problems(log_vault) == [(1, "deleted")]


def test_cut_off_the_end(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute("DELETE FROM audit_log WHERE seq > 6")
    assert problems(log_vault) == [(7, "deleted")]


def test_cut_off_the_end_and_forge_the_head(db: sqlite3.Connection, log_vault: Vault) -> None:
    last = db.execute("SELECT hash FROM audit_log WHERE seq = 6").fetchone()[0]
    db.execute("DELETE FROM audit_log WHERE seq > 6")
    db.execute("UPDATE audit_head SET seq = 6, hash = ?", (last,))
    assert problems(log_vault) == [(6, "edited")]  # the head checkpoint's MAC fails


def test_inserted_forged_record(db: sqlite3.Connection, log_vault: Vault) -> None:
    prev = db.execute("SELECT hash FROM audit_log WHERE seq = 4").fetchone()[0]
    renumber(db, 4, 1)
    db.execute("UPDATE audit_head SET seq = seq + 1")
    db.execute(
        "INSERT INTO audit_log VALUES (5, 1, '2030-01-02T03:04:09+00:00', 'key.create', 'me',"
        " 'x', 'cli', 'ok', '{}', ?, ?)",
        (prev, "ab" * 32),
    )
    assert (5, "inserted") in problems(log_vault)
    assert all(kind == "inserted" or seq == N + 1 for seq, kind in problems(log_vault))


def test_inserted_forged_record_at_the_end(db: sqlite3.Connection, log_vault: Vault) -> None:
    prev = db.execute("SELECT hash FROM audit_log WHERE seq = ?", (N,)).fetchone()[0]
    db.execute(
        "INSERT INTO audit_log VALUES (?, 1, '2030-01-02T03:04:09+00:00', 'key.create', 'me',"
        " 'x', 'cli', 'ok', '{}', ?, ?)",
        (N + 1, prev, "cd" * 32),
    )
    assert problems(log_vault) == [(N + 1, "inserted")]


def test_replayed_copy_of_a_record(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute(
        "INSERT INTO audit_log SELECT ?, format, time, action, actor, subject, source, outcome,"
        " details, prev_hash, hash FROM audit_log WHERE seq = 3",
        (N + 1,),
    )
    assert problems(log_vault) == [(N + 1, "inserted")]


def test_reordered_records(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute("UPDATE audit_log SET seq = 1000 WHERE seq = 4")
    db.execute("UPDATE audit_log SET seq = 4 WHERE seq = 5")
    db.execute("UPDATE audit_log SET seq = 5 WHERE seq = 1000")
    found = problems(log_vault)
    assert len(found) == 1 and found[0][1] == "reordered" and found[0][0] in (4, 5)


def test_verify_from_a_fresh_handle(db_path: Path, master: MasterKey, log_vault: Vault) -> None:
    other = Vault.open(SqliteStore(db_path), master)
    assert other.audit.verify().ok


def test_append_many_is_one_ordered_batch(vault: Vault) -> None:
    records = vault.append_many(
        [AuditEvent(f"batch.{i}", "gw", source="10.0.0.1") for i in range(5)]
    )
    assert [r.seq for r in records] == [2, 3, 4, 5, 6]
    assert [r.action for r in vault.audit.list(after_seq=1)] == [f"batch.{i}" for i in range(5)]
    assert vault.append_many([]) == []
    assert vault.audit.verify().ok


def test_secrets_never_reach_the_audit_store(vault: Vault, db_path: Path) -> None:
    raw = generate_openai_style_key()
    known = Secret(generate_openai_style_key())  # registered with the redactor
    vault.audit.append(
        AuditEvent(
            "test.leak",
            "tester",
            subject=f"oops {raw}",
            source="test",
            details={"note": f"header was Bearer {raw}", "nested": [{"v": known.reveal()}]},
            sensitive={"client_token": raw},
        )
    )
    rec = vault.audit.list()[-1]
    dumped = json.dumps([rec.subject, rec.details])
    assert raw not in dumped and known.reveal() not in dumped
    assert rec.details["client_token"] == vault.audit.pseudonymise(raw)
    assert rec.details["client_token"].startswith("hmac:")
    assert vault.audit.verify().ok
    content = db_path.read_bytes() + Path(f"{db_path}-wal").read_bytes()
    assert raw.encode() not in content and known.reveal().encode() not in content


def test_details_must_be_json(vault: Vault) -> None:
    with pytest.raises(TypeError):
        vault.audit.append(AuditEvent("x", "y", details={"when": object()}))
    with pytest.raises(ValueError):
        vault.audit.append(AuditEvent("x", "y", details={"v": float("nan")}))
    with pytest.raises(ValueError):
        vault.audit.append(AuditEvent("x", "y", time=datetime(2030, 1, 1)))
    assert vault.audit.verify().ok


def test_deleted_head_checkpoint(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute("DELETE FROM audit_head")
    assert problems(log_vault) == [(N, "deleted")]


def test_report_text_names_seq_and_kind(db: sqlite3.Connection, log_vault: Vault) -> None:
    db.execute("DELETE FROM audit_log WHERE seq = 3")
    text = str(log_vault.audit.verify())
    assert "FAILED" in text and "seq 3: deleted" in text


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(details=st.dictionaries(st.text(max_size=12), _json, max_size=5), actor=st.text(max_size=20))
def test_any_json_details_survive_storage_and_verify(
    vault: Vault, details: dict[str, object], actor: str
) -> None:
    vault.audit.append(AuditEvent("prop.test", actor, details=details))
    assert vault.audit.verify().ok


def test_flat_details_are_redacted_and_times_stored_in_utc(vault: Vault) -> None:
    """The one-pass path for flat details (every gateway record) redacts keys and values."""
    raw = generate_openai_style_key()
    when = datetime(2030, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    vault.audit.append(
        AuditEvent(
            "test.flat",
            "tester",
            details={"model": f"x {raw}", f"k {raw}": 1, "ms": 0.5, "ok": True, "none": None},
            time=when,
        )
    )
    rec = vault.audit.list()[-1]
    assert raw not in json.dumps(rec.details)
    assert rec.details["ms"] == 0.5 and rec.details["ok"] is True and rec.details["none"] is None
    assert rec.time == when and rec.time.utcoffset() == timedelta(0)
    with pytest.raises(ValueError):
        vault.audit.append(AuditEvent("x", "y", details={"v": float("inf")}))
    assert vault.audit.verify().ok


def test_uniform_records_chain_with_the_rest_and_are_redacted(vault: Vault, db_path: Path) -> None:
    """The gateway's per-request appender: same chain, same redaction, same stored form."""
    raw = generate_openai_style_key()
    known = Secret(generate_openai_style_key())
    appender = vault.audit.uniform("gateway.request", ("status", "latency_ms", "model", "ok"))
    when = datetime(2030, 1, 1, 12, 0, 0, 250000, tzinfo=timezone(timedelta(hours=-5)))
    assert appender.append([]) == 0
    written = appender.append(
        [
            (when, "key:abc", f"GET /v1/{raw}", "127.0.0.2", "denied", (404, 0.5, None, False)),
            (when, f"key:{known.reveal()}", "POST /v1/x", "::1", "ok", (200, 1.25, raw, True)),
        ]
    )
    assert written == 2
    vault.audit.append(AuditEvent("after.uniform", "tester", details={"i": 1}))
    appender.append([(when, "anonymous", "GET /v1/models", "10.0.0.1", "ok", (200, 2.0, "m", 1))])
    records = vault.audit.list()
    assert [r.action for r in records[-4:]] == [
        "gateway.request",
        "gateway.request",
        "after.uniform",
        "gateway.request",
    ]
    first, second = records[-4], records[-3]
    assert first.details == {"status": 404, "latency_ms": 0.5, "model": None, "ok": False}
    assert first.time == when and first.time.utcoffset() == timedelta(0)
    assert first.source == "127.0.0.2" and first.outcome == "denied"
    dumped = json.dumps([[r.actor, r.subject, r.details] for r in records])
    assert raw not in dumped and known.reveal() not in dumped
    assert second.details["ok"] is True and second.details["model"] != raw
    report = vault.audit.verify()
    assert report.ok, str(report)
    content = db_path.read_bytes() + Path(f"{db_path}-wal").read_bytes()
    assert raw.encode() not in content and known.reveal().encode() not in content


def test_uniform_appender_rejects_bad_rows_and_writes_nothing(vault: Vault) -> None:
    before = len(vault.audit.list())
    appender = vault.audit.uniform("gateway.request", ("status",))
    good = (datetime(2030, 1, 1, tzinfo=timezone.utc), "a", "s", "1.2.3.4", "ok", (200,))
    bad_rows = [
        (datetime(2030, 1, 1), "a", "s", "1.2.3.4", "ok", (200,)),  # naive time
        (good[0], "a", "s", "1.2.3.4", "ok", (200, 1)),  # too many values
        (good[0], "a", "s", "1.2.3.4", "ok", (float("nan"),)),
        (good[0], "a", "s", "1.2.3.4", "ok", ({"nested": 1},)),
    ]
    for bad in bad_rows:
        with pytest.raises((ValueError, TypeError)):
            appender.append([good, bad])
    assert len(vault.audit.list()) == before
    assert vault.audit.verify().ok
