"""The operator dashboard: server-rendered HTML pages at /dashboard, mounted by the
server (docs/adr/0020). An edge like the server: it parses, calls a service, renders.

- `app`: the mounted application: pages, static files, error pages, headers.
- `auth`: operator sessions in cookies, CSRF, who may see a page, flash messages.
- `rendering`: the Jinja2 environment (autoescape everywhere) and `render`.
- `page`: what surrounds every signed-in page (operator, app switcher, navigation).
- `charts`: SVG charts computed in Python, drawn by templates/charts.html.
- `format`: numbers and times in the operator's time zone.
- `paging`: keyset pagination links.
- `csv_export`: streamed CSV, safe to open in a spreadsheet.
- `customer_view`: what a customer's page shows, read in one snapshot (balances as
  the API computes them, grants, the burn-down).
- `pages/`: one module per page (its routes); templates/ holds one template per page.
"""

from revenipe.dashboard.app import PREFIX, create_dashboard

__all__ = ["PREFIX", "create_dashboard"]
