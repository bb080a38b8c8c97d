"""Side-by-side benchmark of fsftpd against pyftpdlib, aioftp and vsftpd.

Entry point: ``python -m bench.run [--quick]``; see ``docs/benchmarks.md``.
"""
