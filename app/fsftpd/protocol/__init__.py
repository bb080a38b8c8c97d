"""Pure FTP protocol core: parsing, replies, paths, listings and session state.

Nothing in this package touches sockets, the event loop, the clock or logging, so every
function here can be tested with plain tables and property tests.
"""
