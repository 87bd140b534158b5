"""API fuzzing: schemathesis against the committed OpenAPI document, authenticated.

Every operation in docs/openapi.json (client protocol and server API alike, and any
operation added to it later: nothing here names one) gets generated requests, valid
ones and invalid ones (schemathesis's negative mode), sent in-process to the server over
SQLite and PostgreSQL. Each request carries the credentials its operation declares
(`security`): the public app id and a customer token, or the secret key. Most valid
requests are pointed at things that exist, so that they reach the handlers' logic rather
than stopping at "not found": a customer id in a path or in a body is replaced by the
token's customer (whichever of external or internal id the field holds), a usage event
id by a real one.

Checked on every answer: never a 5xx, the status code is one the operation documents,
the body and headers match the documented schema, and invalid requests are refused
with a 4xx. Cases per operation and mode: REVENIPE_RELIABILITY_FUZZ_EXAMPLES (CI: 8).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import revenipe
from reliability.conftest import size
from revenipe.server.app import create_app
from revenipe.server.settings import ServerSettings

from support import DEMO_CATALOG

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

EXAMPLES = size("FUZZ_EXAMPLES", 8)
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class Known:
    """What exists in the fuzzed app, to point valid requests at."""

    app_id: str
    secret_key: str
    external_id: str
    client_id: str
    token: str
    usage_event_id: str
    reservation_ids: tuple[str, ...] = ()
    """Holds of alice's, one per reservation case aimed at them (each closes once)."""

    def credentials(self, operation: dict[str, Any]) -> dict[str, str]:
        schemes = {name for option in operation.get("security", []) for name in option}
        if "secretKey" in schemes:
            return {"Authorization": f"Bearer {self.secret_key}"}
        if "appId" in schemes:
            return {"Authorization": self.app_id, "X-Revenipe-Customer-Token": self.token}
        return {}


def _known(backend: revenipe.Backend, http: TestClient) -> Known:
    # A sandbox app: the purchase endpoints do real work (checkouts, trials, changes).
    created = backend.create_app("fuzzed", revenipe.load_catalog(DEMO_CATALOG), sandbox=True)
    api = {"Authorization": f"Bearer {created.secret_key}"}
    for product in ("welcome", "pack_50"):
        granted = http.post("/v1/customers/alice/grants", json={"product_id": product}, headers=api)
        assert granted.status_code == 201, granted.text
    minted = http.post("/v1/customers/alice/tokens", json={}, headers=api).json()
    tracked = http.post(
        "/v1/customers/alice/track", json={"id": "credits", "value": 1}, headers=api
    ).json()
    held = [
        http.post(
            "/v1/customers/alice/reservations",
            json={"id": "credits", "value": 1, "ttl_seconds": 86_400},
            headers=api,
        ).json()["reservation_id"]
        for _ in range(4)
    ]
    return Known(
        created.app.id,
        created.secret_key,
        "alice",
        minted["client_id"],
        minted["token"],
        tracked["usage_event_id"],
        tuple(held),
    )


def _aim(case: Any, known: Known) -> None:
    """Point a valid case at existing things, most of the time (decided by its data)."""
    digest = hashlib.sha256(
        json.dumps([case.path_parameters, case.body], default=str, sort_keys=True).encode()
    ).digest()
    if digest[0] < 40:  # about one in six stays as generated: unknown ids, other customers
        return
    paths = case.path_parameters or {}
    if "external_id" in paths:
        paths["external_id"] = known.external_id
    if "usage_event_id" in paths:
        paths["usage_event_id"] = known.usage_event_id
    if "reservation_id" in paths and known.reservation_ids:
        paths["reservation_id"] = known.reservation_ids[digest[1] % len(known.reservation_ids)]
    if isinstance(case.body, dict):
        for field in ("client_id", "customer_id"):
            if field in case.body:
                # The login takes the external identity; every other call the internal id.
                login = case.operation.path.endswith("/client/auth")
                case.body[field] = known.external_id if login else known.client_id


def _rejection(case: Any) -> list[Any]:
    """Invalid bodies and paths must be refused. Invalid headers and queries are not held
    to it: the credentials sent overwrite a negated Authorization, and unknown query
    parameters are ignored by design (as most HTTP APIs do)."""
    negated = {
        location
        for location, info in (case.meta.components if case.meta else {}).items()
        if info.mode is GenerationMode.NEGATIVE
    }
    if negated & {ParameterLocation.BODY, ParameterLocation.PATH}:
        return [negative_data_rejection]
    return []


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    declared: dict[str, Any],
    known: Known,
    cases: Counter[str],
    statuses: Counter[int],
    server_errors: list[str],
) -> None:
    """EXAMPLES generated cases of one operation in one mode, each sent and checked."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:
            _aim(case, known)
        response = case.call(headers=known.credentials(declared))
        cases[operation.label] += 1
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append(f"{operation.label}: {response.status_code} {response.text}")
        case.validate_response(response, checks=CHECKS + _rejection(case))

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid (no parameters, no body): only the valid mode applies.
        assert mode is GenerationMode.NEGATIVE, operation.label


@pytest.mark.slow
def test_every_documented_operation_under_generated_requests(
    backend: revenipe.Backend, figures: object
) -> None:
    document = json.loads(OPENAPI.read_text())
    # Flood limits off: thousands of cases from one address and one token are the fuzzer
    # doing its job, not a flood (test_abuse_limits.py tests the limits).
    unlimited = ServerSettings(
        database_url=backend.context.db.url,
        client_requests_per_minute_per_address=0,
        client_requests_per_minute_per_customer=0,
    )
    app = create_app(unlimited, context=backend.context)
    with TestClient(app, raise_server_exceptions=False) as http:
        known = _known(backend, http)
    schema = schemathesis.openapi.from_path(OPENAPI)
    schema.app = app
    cases: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(ops) for ops in document["paths"].values())
    for operation in operations:
        declared = document["paths"][operation.path][operation.method.lower()]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, declared, known, cases, statuses, server_errors)
    assert not server_errors, server_errors[:5]
    assert callable(figures)
    figures(
        database=backend.context.db.dialect,
        operations=len(operations),
        fuzz_cases=sum(cases.values()),
        server_errors=len(server_errors),
        statuses=dict(sorted(statuses.items())),
    )
