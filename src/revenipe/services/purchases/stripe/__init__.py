"""Selling through Stripe (docs/stripe.md).

- `settings`: an app's Stripe keys and webhook secret;
- `billing`: the `PurchaseProvider` that calls Stripe (Checkout, PaymentSheet, trials,
  cancel, plan changes, payment methods);
- `calls`: what its calls are made of (the Stripe customer, prices, metadata,
  idempotency keys), shared by starting a purchase and changing one;
- `sync`: Stripe's objects read back and applied as access sources;
- `webhooks`: signed webhook deliveries, applied exactly once and in any order.
"""
