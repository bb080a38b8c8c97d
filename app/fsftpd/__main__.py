"""``python -m fsftpd`` / ``fsftpd``: the appliance's command (see :mod:`fsftpd.appliance.cli`
and docs/configuration.md)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .appliance.cli import main as appliance_main

    return appliance_main(argv)


if __name__ == "__main__":
    sys.exit(main())
