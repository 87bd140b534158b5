"""The cost of outbound webhooks on a track (`ratios.<db>.track_with_webhooks_vs_without`).

Two apps on the same database: the bench's app as it is (no alerts, no endpoints), and
one whose catalog adds usage alerts on the tracked key and which has three endpoints
subscribed to every event type. The same track, one caller, many customers, measured in
alternating rounds. The alerts never fire here (the pack holds 10^9 credits), so the
figure is what every track pays to look: the endpoints, the balances, the alerts'
memory. Nothing is sent: the bench runs no delivery worker.
"""

from __future__ import annotations

import revenipe
from revenipe.bench import workload
from revenipe.bench.callers import CallerSpec
from revenipe.bench.scenarios import Scenario
from revenipe.catalog import load_catalog
from revenipe.services.outbound import endpoints
from revenipe.services.outbound.targets import TargetPolicy

WITHOUT = "single_without_webhooks"
WITH = "single_with_3_webhooks"
ENDPOINTS = 3
_ALERTS = "    alerts: [{remaining_percent: 20}, {remaining_percent: 5}, {remaining: 0}]\n"


def _alerts_catalog() -> revenipe.Catalog:
    text = workload.CATALOG % workload.PACK_CREDITS
    marker = "    entitlements: [monthly_credits, bonus_credits, purchased_credits]\n"
    return load_catalog(text.replace(marker, marker + _ALERTS))


def scenarios(
    backend: revenipe.Backend, url: str, plain: revenipe.App, customers: int
) -> list[tuple[str, str, Scenario]]:
    """The two scenarios (part, name, scenario), their customers set up."""
    created = backend.create_app("bench with webhooks", _alerts_catalog())
    hooked = backend.app(created.app.id)
    local = TargetPolicy(allow_private=True, require_https=False)
    for i in range(ENDPOINTS):
        endpoints.create_endpoint(hooked.context, hooked.app_id, local, f"http://127.0.0.1:9/{i}")
    names = workload.customer_names
    without = workload.add_customers(plain, names("hooks-without", customers))
    with_hooks = workload.add_customers(hooked, names("hooks-with", customers))
    warm_plain = [workload.add_customers(plain, names("hooks-warm-without", 1))]
    warm_hooked = [workload.add_customers(hooked, names("hooks-warm-with", 1))]

    def spec(app: revenipe.App) -> CallerSpec:
        return CallerSpec(
            kind="track",
            url=url,
            app_id=app.app_id,
            tracked_id=workload.TRACKED_ID,
            value=workload.TRACK_VALUE,
        )

    return [
        (
            "inprocess",
            WITHOUT,
            Scenario("1 caller, no webhooks", spec(plain), [without], warm_plain),
        ),
        (
            "inprocess",
            WITH,
            Scenario("1 caller, alerts and 3 endpoints", spec(hooked), [with_hooks], warm_hooked),
        ),
    ]
