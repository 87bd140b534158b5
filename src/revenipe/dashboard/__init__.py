"""The operator dashboard: server-rendered HTML pages at /dashboard, mounted by the
server (docs/adr/0020). An edge like the server: it parses, calls a service, renders.

    app.py        the mounted application: pages, static files, error pages, headers
    auth.py       operator sessions in cookies, CSRF, who may see a page
    rendering.py  the Jinja2 environment (autoescape everywhere) and `render`
    charts.py     SVG charts computed in Python, drawn by templates/charts.html
    format.py     numbers and times in the operator's time zone
    paging.py     keyset pagination links
    pages/        one module per page (its routes), templates/ one template per page
"""

from revenipe.dashboard.app import PREFIX, create_dashboard

__all__ = ["PREFIX", "create_dashboard"]
