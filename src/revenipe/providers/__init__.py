"""Adapters to payment providers' own APIs, below the services.

Every call into an outside provider's library lives here (`stripe_gateway` is the only
module that imports `stripe`); the services hand these adapters plain values and get
plain JSON-shaped dicts back, and `stripe_objects` reads those dicts without I/O.
"""
