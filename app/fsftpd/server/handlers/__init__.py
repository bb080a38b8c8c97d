"""Command handlers by topic. Importing this package registers every handler."""

from . import auth, channel, files, info, listings, transfers

__all__ = ["auth", "channel", "files", "info", "listings", "transfers"]
