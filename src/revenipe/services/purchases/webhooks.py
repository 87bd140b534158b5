"""What every provider's webhook endpoint answers about one delivery."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Received:
    event_id: str
    type: str
    outcome: str
    """applied; ignored (recorded, nothing of ours to change); pending (recorded, waiting
    for an earlier event of its subject); or duplicate (recorded before)."""
    detail: str | None = None
