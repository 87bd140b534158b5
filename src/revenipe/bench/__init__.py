"""`revenipe bench`: how fast a track is, next to what the database itself can do.

Parts (each per database, SQLite and PostgreSQL, side by side in one run):

- `sql_limit` (`sql_limit.py`): the raw-SQL equivalent of one track, same driver; and
  (`track_sql.py`) the statements a real track runs on revenipe's own tables, with no
  revenipe code around them, one track a commit and 16: the database's share of a track;
- `inprocess`: tracks through the embedded API (`workload.py` sets customers up), from
  caller processes and from 16 threads of one process sharing one `Backend`;
- `http` (`http.py`): `revenipe serve` under `wrk`, tracks against `GET /v1/health`,
  1 worker against 2, and the tail at 64 connections;
- `scale` (`scale.py`): track latency at 10^3 and 10^6 customers and ledger entries;
- `webhooks` (`webhooks.py`, in the `inprocess` part): a track with usage alerts and 3
  outbound webhook endpoints against the plain app, one caller each.

Apart from the parts, `revenipe bench --dashboard` (`dashboard.py`) times every page of
the dashboard in process at 10^6 customers and 2x10^6 ledger entries.

Callers run in worker processes (`pool.py`, `callers.py`), or as a group of threads in
one of them; `scenarios` runs N callers
together and compares scenarios in alternating rounds; `stats` turns timings into
throughput and percentiles; `runner.py` runs the parts and `report.py` turns the figures
into the JSON object and the table. `plan` says how much a quick or a full run
measures, `databases` makes the throw-away databases, `loadgen` is the fallback HTTP
load generator when `wrk` is missing and `responder` the trivial server that measures
its ceiling. `cli` is the `revenipe bench` command line. Nothing here is imported by the
rest of the package but the CLI.
"""
