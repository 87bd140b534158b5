"""Guards of the SDK's public surface and of its independence from the rest of `revenipe`."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from dataclasses import is_dataclass
from pathlib import Path

import revenipe.client

CLIENT_DIR = Path(revenipe.client.__file__).parent

PUBLIC_API = {
    # clients and configuration
    "Revenipe",
    "RevenipeSync",
    "RevenipeConfig",
    "CustomerTokenSupplier",
    "RevenipeServerClient",
    "AsyncRevenipeServerClient",
    # results
    "Customer",
    "CustomerEntitlement",
    "UsageKey",
    "CustomerSubscription",
    "PendingChange",
    "CustomerAddOn",
    "CustomerBasePlan",
    "TrackResult",
    "HoldResult",
    "SettleResult",
    "AsyncHold",
    "SyncHold",
    "Product",
    "ProductEntitlement",
    "StartPurchaseResult",
    "CheckoutSession",
    "PaymentSheet",
    "PaymentSetup",
    "TrialSubscription",
    "CancelResult",
    "UncancelResult",
    "ChangePlanResult",
    "AttachPaymentMethodResult",
    "CustomerToken",
    # argument types
    "PurchaseMethod",
    "TrialPaymentMethodBehavior",
    "CancelMode",
    # errors
    "RevenipeClientError",
    "ApiError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "RateLimitedError",
    "TransportError",
    "ProtocolError",
    "NotLoggedInError",
    "NotConfiguredError",
    "InvalidArgumentError",
    "HoldRefusedError",
}


def test_the_public_surface_is_exactly_this() -> None:
    assert set(revenipe.client.__all__) == PUBLIC_API
    assert len(revenipe.client.__all__) == len(PUBLIC_API)
    for name in PUBLIC_API:
        assert hasattr(revenipe.client, name), name


def test_public_names_live_in_private_modules() -> None:
    modules = {p.stem for p in CLIENT_DIR.glob("*.py")} - {"__init__"}
    assert modules and all(m.startswith("_") for m in modules)
    public_attributes = {n for n in vars(revenipe.client) if not n.startswith("_")}
    assert public_attributes == PUBLIC_API


def test_public_classes_say_they_come_from_revenipe_client() -> None:
    for name in PUBLIC_API:
        obj = getattr(revenipe.client, name)
        if inspect.isclass(obj):
            assert obj.__module__ == "revenipe.client", name


def test_every_error_is_a_revenipe_client_error() -> None:
    errors = {
        name
        for name in PUBLIC_API
        if inspect.isclass(getattr(revenipe.client, name))
        and issubclass(getattr(revenipe.client, name), BaseException)
    }
    assert len(errors) == 12
    for name in errors:
        assert issubclass(getattr(revenipe.client, name), revenipe.client.RevenipeClientError)
    assert issubclass(revenipe.client.InvalidArgumentError, ValueError)
    for status_error in (
        revenipe.client.AuthenticationError,
        revenipe.client.PermissionDeniedError,
        revenipe.client.NotFoundError,
        revenipe.client.RateLimitedError,
    ):
        assert issubclass(status_error, revenipe.client.ApiError)


def test_everything_public_has_a_docstring() -> None:
    assert revenipe.client.__doc__
    for name in PUBLIC_API:
        obj = getattr(revenipe.client, name)
        if not inspect.isclass(obj):
            continue
        assert obj.__doc__ and obj.__doc__.strip(), name
        for member_name, member in vars(obj).items():
            # Dataclass and exception constructors are described by their class.
            documents_init = not (is_dataclass(obj) or issubclass(obj, BaseException))
            if member_name.startswith("_") and not (member_name == "__init__" and documents_init):
                continue
            if isinstance(member, property):
                member = member.fget
            if inspect.isfunction(member):
                assert member.__doc__, f"{name}.{member_name}"


def test_the_sdk_imports_only_the_standard_library_httpx_and_itself() -> None:
    allowed_third_party = {"httpx"}
    for source in CLIENT_DIR.glob("*.py"):
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{source.name}: use absolute imports"
                names = [node.module or ""]
            else:
                continue
            for module in names:
                top = module.split(".")[0]
                if top == "revenipe":
                    assert module == "revenipe.client" or module.startswith("revenipe.client."), (
                        f"{source.name} imports {module}"
                    )
                else:
                    assert top in sys.stdlib_module_names or top in allowed_third_party, (
                        f"{source.name} imports {module}"
                    )


def test_importing_the_sdk_loads_no_other_revenipe_module() -> None:
    # `revenipe/__init__.py` itself loads the engine and storage; stand in an empty parent
    # package for it, so what is measured is what `revenipe.client` pulls in.
    script = f"""
import json, sys, types
parent = types.ModuleType("revenipe")
parent.__path__ = [{str(CLIENT_DIR.parent)!r}]
sys.modules["revenipe"] = parent
import revenipe.client
print(json.dumps(sorted(sys.modules)))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = json.loads(completed.stdout)

    revenipe_modules = [m for m in loaded if m == "revenipe" or m.startswith("revenipe.")]
    assert all(
        m in ("revenipe", "revenipe.client") or m.startswith("revenipe.client.")
        for m in revenipe_modules
    ), revenipe_modules
    for heavy in ("sqlalchemy", "pydantic", "fastapi", "yaml", "psycopg"):
        assert heavy not in loaded, heavy
