"""Research replay: historical order flow through the engine's book (LOBSTER files so far)."""
