"""The committed OpenAPI document must equal what the server serves."""

from pathlib import Path

from fastapi.testclient import TestClient

from revenipe.server.app import create_app
from revenipe.server.openapi import render
from revenipe.server.settings import ServerSettings
from revenipe.services.context import ServiceContext
from revenipe.storage.database import open_database

COMMITTED = Path(__file__).parents[2] / "docs" / "openapi.json"


def test_committed_openapi_matches_the_code() -> None:
    assert COMMITTED.read_text() == render(), (
        "docs/openapi.json is out of date: run scripts/openapi and commit the result"
    )


def test_served_openapi_matches_the_committed_document() -> None:
    context = ServiceContext(db=open_database("sqlite://", migrate=False))
    with TestClient(create_app(ServerSettings(), context=context)) as client:
        served = client.get("/openapi.json")
    assert served.status_code == 200
    import json

    assert json.loads(COMMITTED.read_text()) == served.json()
