"""The container appliance: the ``fsftpd`` command configured by ``FSFTPD_*`` environment
variables. A user of the library: it imports only ``fsftpd``'s public API, and it is the
only part of fsftpd that imports pydantic and pydantic-settings.

- :mod:`.settings`  the variables (pydantic-settings), aliases, ``_FILE`` secrets, checks;
- :mod:`.values`    parsing single values (port ranges, addresses, replica index, home URL);
- :mod:`.users`     users from the variables or a JSON file; argon2/bcrypt/plain passwords;
- :mod:`.logs`      text/JSON logging and the access log (an events observer);
- :mod:`.runner`    serving, drain, reload; the seams for metrics (``SETUP``, ``LIFECYCLE``);
- :mod:`.cli`       ``main(argv) -> int``, the console script.

See docs/configuration.md.
"""
