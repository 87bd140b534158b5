"""The built-in sandbox provider: purchases with no payment network, and test clocks.

- `provider`: the `PurchaseProvider` a sandbox app sells through;
- `checkout`: the hosted checkout page and payment intents, completed by a button;
- `clock`: a sandbox app's test clock, moved forward by hand.
"""
