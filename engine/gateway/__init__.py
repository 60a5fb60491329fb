"""The engine service and what it owns: sockets, market data."""
