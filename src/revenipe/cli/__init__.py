"""The `revenipe` command line: parse, call a service, render. No rules here.

It starts at once: building every parser (`--help`, `--version`) loads only the standard
library, and each handler imports the services, storage and libraries it needs when it
runs (tests/unit/test_cli_startup.py holds this; `scripts/cli-startup` measures it).

- `main`: the parser, `--version`, and `main()`: open the database, run the handler,
  print its result or the error, exit status.
- `common`: what every command shares: `--database-url` and `--json`, integer and time
  arguments, `CommandError`, the handler's shape.
- `apps`: `apps create|list|update`, `tokens mint`.
- `catalog`: `catalog validate|apply`.
- `usage`: `customers show`, `grant`, `track`, `check`, `reverse`, `verify`.
- `reservations`: `reservations hold|settle|release|show`.
- `sandbox`: `sandbox advance|clock`, a sandbox app's test clock.
- `serve`: `serve`: first-start setup, then uvicorn.
- `stripe`, `revenuecat`: an app's payment provider settings.
- `webhooks`: `webhooks create|list|update|delete|test|rotate-secret|deliveries|
  redeliver`, an app's outbound webhook endpoints.
- `operators`: `operators create|list` (dashboard accounts) and `dashboard link` (a
  one-time sign-in URL).
"""
