"""The exchange on the network: the engine service (the one owner of every socket), the
order-entry wire, broker gateways' client, market data and admin.

Modules: wire (frames and session messages), sessions (who is connected, drop copy, kept
frames), status (answers to resent orders), service (the loop: drain, journal, apply, fsync,
send), client (GatewayClient, AsyncGatewayClient), marketdata (the sequenced PUB feed and the
Clone-pattern snapshot service the loop owns), marketdata_client (MarketDataClient).
"""
