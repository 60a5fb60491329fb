"""Clearing: trade capture, end-of-day netting, DVP settlement ledger, statements, surrender."""
