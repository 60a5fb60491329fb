"""The exchange on the network: the engine service (the one owner of every socket), the
order-entry wire, broker gateways' client, and (with their issues) market data and admin.

Modules: wire (frames and session messages), sessions (who is connected, drop copy, kept
frames), status (answers to resent orders), service (the loop: drain, journal, apply, fsync,
send), client (GatewayClient, AsyncGatewayClient).
"""
