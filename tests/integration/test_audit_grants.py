"""The index API's database role (infra/db/roles.sql): it works on a migrated index, and the
audit trail is append-only for it (and, by its trigger, for every role)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shared.index import audit, tokens
from shared.index.connect import open_index
from shared.index.lookup import read_patient

pytestmark = pytest.mark.integration

ROLES = Path(__file__).resolve().parents[2] / "infra" / "db" / "roles.sql"


def as_role(url: str, role: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{role}@{rest.split('@', 1)[-1]}"


def test_the_api_role_may_append_to_the_audit_trail_and_never_change_it(
    database_url: str,
) -> None:
    async def run() -> None:
        owner = await open_index(None, database_url)  # migrations, site
        try:
            async with owner.pool.acquire() as connection:
                await connection.execute(ROLES.read_text(encoding="utf-8"))
                await audit.record(connection, actor="owner", action="setup")
        finally:
            await owner.close()
        api = await open_index(None, as_role(database_url, "anon_api"))
        try:
            async with api.pool.acquire() as connection:
                async with connection.transaction():
                    assert await read_patient(connection, "000000-000001") is None
                    await audit.record(connection, actor="reader", action="patient.phi",
                                       target="000000-000001", outcome=audit.NOT_FOUND)
                secret, info = await tokens.create_token(connection, "someone", "operator",
                                                         "test")
                assert await tokens.authenticate(api.pool, secret) == info
                await tokens.revoke_token(connection, "someone")
                for statement in ("UPDATE audit_event SET outcome = 'ok'",
                                  "DELETE FROM audit_event", "TRUNCATE audit_event"):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await connection.execute(statement)
                # Nor may it touch the PHI it only reads.
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await connection.execute("DELETE FROM patient")
        finally:
            await api.close()
        connection = await asyncpg.connect(database_url)
        try:
            for statement in ("UPDATE audit_event SET outcome = 'ok'",
                              "DELETE FROM audit_event", "TRUNCATE audit_event"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await connection.execute(statement)
            actions = [r["action"] for r in await connection.fetch(
                "SELECT action FROM audit_event ORDER BY id")]
            assert actions == ["setup", "patient.phi"]
        finally:
            await connection.close()

    asyncio.run(run())
