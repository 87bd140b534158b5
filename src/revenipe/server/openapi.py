"""The OpenAPI document, as served at /openapi.json and committed at docs/openapi.json.

`python -m revenipe.server.openapi > docs/openapi.json` rewrites the committed copy;
a test fails when the two drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from revenipe.server.app import create_app
from revenipe.server.settings import ServerSettings
from revenipe.services.context import ServiceContext
from revenipe.storage.database import open_database


def openapi_document() -> dict[str, Any]:
    """Build the document without touching any real database."""
    context = ServiceContext(db=open_database("sqlite://", migrate=False))
    try:
        return create_app(ServerSettings(), context=context).openapi()
    finally:
        context.db.close()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
