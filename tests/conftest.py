"""Shared fixtures: every book test runs against the compiled book and the reference book."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from engine.book import Book, ReferenceBook
from engine.core import Exchange, ReferenceExchange
from engine.gateway.readerlimit import raise_descriptor_limit

settings.register_profile(
    "ci",
    max_examples=400,
    stateful_step_count=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# as `cxe serve` and `cxe relay` do at start: the in-process feeds' connection caps are a share
# of this process's descriptors, and the suite's crowds of readers need the hard limit's
raise_descriptor_limit()

BOOKS = {"compiled": Book, "reference": ReferenceBook}


@pytest.fixture(params=sorted(BOOKS))
def make_book(request):
    """A factory for the book under test: make_book(tick=1, band=None)."""
    return BOOKS[request.param]


EXCHANGES = {"compiled": Exchange, "reference": ReferenceExchange}


@pytest.fixture(params=sorted(EXCHANGES))
def make_exchange(request):
    """The exchange under test: make_exchange(config). The production exchange (compiled
    book) and the reference exchange (the executable specification) run the same tests."""
    return EXCHANGES[request.param]
