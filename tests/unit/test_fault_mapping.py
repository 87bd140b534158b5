"""How database errors become the errors callers expect (storage/faults.py)."""

from __future__ import annotations

import psycopg
import pytest

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.storage.faults import expected_errors


def _raised_through(error: Exception) -> tuple[BaseException, list[str]]:
    """What `expected_errors` makes of `error`, and whether it called `on_lost`."""
    lost: list[str] = []
    with pytest.raises(Exception) as raised, expected_errors(lambda: lost.append("lost")):
        raise error
    return raised.value, lost


@pytest.mark.parametrize(
    ("error", "pool_replaced"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.AdminShutdown("terminating connection due to administrator"), True),
        (psycopg.errors.IdleSessionTimeout("terminating connection due to idle"), True),
        (psycopg.errors.IdleInTransactionSessionTimeout("idle-in-transaction timeout"), False),
        (psycopg.errors.TransactionTimeout("transaction timeout"), False),
        (psycopg.InterfaceError("the connection is closed"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_a_lost_connection_is_database_unavailable(error: Exception, pool_replaced: bool) -> None:
    """The server gone, the session ended by the server (a shutdown, or a time-out of
    an idle session, an idle transaction or a long one): retry, `database_unavailable`.
    Only what ends every session (the server gone or shutting down) replaces the whole
    pool; a time-out ends this session only, and the pool drops it when it comes back."""
    raised, lost = _raised_through(error)
    assert isinstance(raised, RevenipeError)
    assert raised.code is ErrorCode.DATABASE_UNAVAILABLE
    assert raised.__cause__ is error
    assert lost == (["lost"] if pool_replaced else [])


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UniqueViolation("duplicate key"),
        psycopg.errors.DivisionByZero("division by zero"),
        psycopg.errors.InternalError_("an internal error"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_a_failed_statement_goes_through_as_it_is(error: Exception) -> None:
    raised, lost = _raised_through(error)
    assert raised is error
    assert lost == []
