"""Purchases: how customers come to hold products, whichever provider sells them.

- `vocabulary`: what every provider shares (requests, orders, outcomes, the
  `PurchaseProvider` protocol, the checks on what customers send); imports no provider;
- `orders`: the client protocol's purchase operations, checked once and handed to the
  provider that sells the app's products;
- `webhooks`: what a provider's webhook delivery answers;
- `sandbox/`, `stripe/`, `revenuecat/`: one package per provider, independent of each
  other (an import-linter contract keeps them so).

Access itself (sources and their grants) is `services.access`, which these build on.
"""
