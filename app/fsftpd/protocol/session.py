"""Session state as enums plus one transition table (RFC 959 section 5.4 sequencing).

The connection layer owns a :class:`Session` and calls :meth:`Session.before` for every
command, which enforces the sequencing rules below, then the handler mutates the state
through the methods here. Nothing in this module performs I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import FtpError


class Login(enum.Enum):
    AWAITING_USER = "awaiting-user"
    AWAITING_PASS = "awaiting-pass"
    LOGGED_IN = "logged-in"


class TransferType(enum.Enum):
    ASCII = "A"
    BINARY = "I"


class DataMode(enum.Enum):
    NONE = "none"
    PASSIVE = "passive"
    ACTIVE = "active"


# Commands that must come right after a given command (RFC 959 5.4), as
# previous verb -> the only verbs that keep the state it set.
SEQUENCES: dict[str, frozenset[str]] = {
    "RNFR": frozenset({"RNTO"}),
    "USER": frozenset({"PASS", "USER", "QUIT"}),
}

# Commands that need a particular earlier command, and the reply when it is missing.
REQUIRES: dict[str, tuple[str, str]] = {
    "RNTO": ("RNFR", "RNFR required first"),
    "PASS": ("USER", "Login with USER first"),
}

# Transfer commands consume the REST offset; these may not use a non-zero one.
REST_ALLOWED = frozenset({"RETR", "STOR", "APPE"})
DATA_COMMANDS = frozenset({"RETR", "STOR", "APPE", "STOU", "LIST", "NLST", "MLSD"})


@dataclass(slots=True)
class Session:
    login: Login = Login.AWAITING_USER
    user_name: str | None = None
    cwd: str = "/"
    transfer_type: TransferType = TransferType.BINARY
    data_mode: DataMode = DataMode.NONE
    epsv_all: bool = False
    rest_offset: int = 0
    rename_from: str | None = None
    last_verb: str = ""
    utf8: bool = True
    mlst_facts: tuple[str, ...] = ("type", "size", "modify", "perm", "unique")
    #: RFC 4217: the control connection is protected (AUTH TLS done, or implicit FTPS)
    tls: bool = False
    #: PBSZ 0 was received (PROT needs it first)
    pbsz: bool = False
    #: PROT P: data connections are protected
    protect_data: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def logged_in(self) -> bool:
        return self.login is Login.LOGGED_IN

    def before(self, verb: str) -> None:
        """Apply the sequencing table before ``verb`` runs; raise 503 on a bad sequence."""
        needed = REQUIRES.get(verb)
        if (needed is not None and self.last_verb != needed[0]
                and not (verb == "PASS" and self.login is Login.AWAITING_PASS)):
            raise FtpError(503, needed[1])
        if self.last_verb == "RNFR" and verb != "RNTO":
            self.rename_from = None
        if self.epsv_all and verb in ("PASV", "PORT", "EPRT"):
            # RFC 2428 section 4: after EPSV ALL only EPSV may set up data connections.
            raise FtpError(503, f"{verb} not allowed after EPSV ALL")

    def after(self, verb: str) -> None:
        self.last_verb = verb

    def reset_login(self) -> None:
        """REIN (RFC 959 4.1.1): back to the state right after connecting."""
        self.login = Login.AWAITING_USER
        self.user_name = None
        self.cwd = "/"
        self.transfer_type = TransferType.BINARY
        self.data_mode = DataMode.NONE
        self.epsv_all = False
        self.rest_offset = 0
        self.rename_from = None
        # The control connection stays protected (TLS cannot be undone, see CCC), but
        # PBSZ and PROT are negotiated again (RFC 4217 section 9: REIN resets them).
        self.pbsz = False
        self.protect_data = False

    def take_rest(self, verb: str) -> int:
        """The pending REST offset for ``verb``, cleared once used."""
        offset, self.rest_offset = self.rest_offset, 0
        if offset and verb not in REST_ALLOWED:
            raise FtpError(503, f"REST not supported with {verb}")
        return offset

    def set_rest(self, arg: str) -> int:
        if not arg.isdigit():
            raise FtpError(501, "REST needs a non-negative integer offset")
        self.rest_offset = int(arg)
        return self.rest_offset

    def set_type(self, arg: str) -> TransferType:
        words = arg.upper().split()
        if words in (["A"], ["A", "N"]):
            self.transfer_type = TransferType.ASCII
        elif words in (["I"], ["L", "8"]):
            self.transfer_type = TransferType.BINARY
        elif words and words[0] in ("A", "I", "L", "E"):
            raise FtpError(504, f"TYPE {arg} not implemented")
        else:
            raise FtpError(501, f"Unknown TYPE {arg!r}")
        return self.transfer_type
