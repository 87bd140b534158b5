"""Purchases made in the app stores, reported by RevenueCat (docs/revenuecat.md).

- `settings`: an app's webhook authorization value;
- `webhooks`: RevenueCat's events applied exactly once and in any order, by folding each
  subscription's recorded events.
"""
