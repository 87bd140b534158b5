"""`revenipe bench`: how fast a track is, next to what the database itself can do.

Parts (each per database, SQLite and PostgreSQL, side by side in one run):

- `sql_limit` (`sql_limit.py`): the raw-SQL equivalent of one track, same driver;
- `inprocess`: tracks through the embedded API (`workload.py` sets customers up);
- `http` (`http.py`): `revenipe serve` under `wrk`, tracks against `GET /v1/health`;
- `scale` (`scale.py`): track latency at 10^3 and 10^6 customers and ledger entries.

Callers run in worker processes (`pool.py`, `callers.py`); `runner.py` runs the parts,
`report.py` turns the figures into the JSON object and the table. Nothing here is
imported by the rest of the package but the CLI.
"""
