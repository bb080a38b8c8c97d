"""The asyncio shell around the protocol core: listener, connections, handlers."""
