"""Adapters to payment providers' own APIs and wire formats, below the services.

- `stripe_gateway`: every call into the `stripe` library (the only module importing it);
- `stripe_objects`: Stripe's objects (plain JSON-shaped dicts) read without I/O;
- `revenuecat_events`: RevenueCat's webhook events read and checked without I/O.

The services hand these adapters plain values and get plain values back.
"""
