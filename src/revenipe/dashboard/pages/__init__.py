"""One module per page of the dashboard, each with `build_router(ctx)`.

- `sign_in`: signing in (password, one-time link) and out.
- `home`: the server's apps, and the app switcher.
- `overview`: an app at a glance.
- `customers`: the customer list and search, a customer's page, its actions and CSV
  exports.
- `analytics`: usage over time.
- `catalog`: the catalog, its editor and versions.
- `settings`: secret keys, token policy, providers, webhook endpoints, time zone.
"""
