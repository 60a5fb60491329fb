"""The exchange core: `Exchange` (production) and `ReferenceExchange` (the specification)."""

from engine.core.exchange import Exchange, StampRefused
from engine.core.reference import ReferenceExchange

__all__ = ["Exchange", "ReferenceExchange", "StampRefused"]
