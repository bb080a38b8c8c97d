"""Command-line parsing and the command table (RFC 959, 2389, 2428, 2640, 3659).

``parse_line`` turns one received line into a :class:`Command`; ``COMMANDS`` says, as data,
what each verb needs before its handler may run. The dispatcher checks those needs in one
place (see ``check_preconditions``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import FtpError
from .listing import MLST_FACTS

MAX_LINE = 8192


class Arg(enum.Enum):
    NONE = "none"  # the verb takes no argument
    OPTIONAL = "optional"
    REQUIRED = "required"


class Access(enum.Enum):
    NONE = "none"
    READ = "read"  # the target path must be readable
    WRITE = "write"  # the target path must be writable


@dataclass(frozen=True, slots=True)
class CommandSpec:
    verb: str
    arg: Arg
    login: bool
    access: Access
    help: str
    handler: str  # name of the handler; aliases share one
    during_transfer: bool = False  # may run while a transfer is in progress


@dataclass(frozen=True, slots=True)
class Command:
    verb: str
    arg: str
    #: Telnet negotiation to send back before the reply (refusals, RFC 854); a command with
    #: an empty ``verb`` was only negotiation and gets no reply of its own
    telnet: bytes = b""

    def __str__(self) -> str:
        if self.verb == "PASS":
            return "PASS ****"
        return f"{self.verb} {self.arg}".rstrip()


def _spec(
    verb: str,
    arg: Arg,
    login: bool,
    access: Access,
    help_text: str,
    handler: str | None = None,
    during_transfer: bool = False,
) -> CommandSpec:
    return CommandSpec(verb, arg, login, access, help_text, handler or verb.lower(), during_transfer)


N, O, R = Arg.NONE, Arg.OPTIONAL, Arg.REQUIRED  # noqa: E741 (short names keep the table readable)
_none, _read, _write = Access.NONE, Access.READ, Access.WRITE

COMMANDS: dict[str, CommandSpec] = {
    s.verb: s
    for s in (
        _spec("USER", R, False, _none, "USER <name>: start a login"),
        _spec("PASS", O, False, _none, "PASS <password>: finish a login"),
        _spec("QUIT", N, False, _none, "QUIT: close the session", during_transfer=True),
        _spec("REIN", N, False, _none, "REIN: log out, keep the connection"),
        _spec("NOOP", N, False, _none, "NOOP: do nothing", during_transfer=True),
        _spec("SYST", N, False, _none, "SYST: system type"),
        _spec("FEAT", N, False, _none, "FEAT: list extensions (RFC 2389)"),
        _spec("OPTS", R, False, _none, "OPTS <cmd> [options]: set options (RFC 2389)"),
        _spec("HELP", O, False, _none, "HELP [cmd]: help", during_transfer=True),
        _spec("STAT", O, True, _read, "STAT [path]: status, or a listing over the control connection",
              during_transfer=True),
        _spec("PWD", N, True, _none, "PWD: print working directory"),
        _spec("XPWD", N, True, _none, "XPWD: alias of PWD", "pwd"),
        _spec("CWD", R, True, _read, "CWD <path>: change working directory"),
        _spec("XCWD", R, True, _read, "XCWD: alias of CWD", "cwd"),
        _spec("CDUP", N, True, _read, "CDUP: go to the parent directory"),
        _spec("XCUP", N, True, _read, "XCUP: alias of CDUP", "cdup"),
        _spec("MKD", R, True, _write, "MKD <path>: make a directory"),
        _spec("XMKD", R, True, _write, "XMKD: alias of MKD", "mkd"),
        _spec("RMD", R, True, _write, "RMD <path>: remove an empty directory"),
        _spec("XRMD", R, True, _write, "XRMD: alias of RMD", "rmd"),
        _spec("DELE", R, True, _write, "DELE <path>: delete a file"),
        _spec("RNFR", R, True, _write, "RNFR <path>: rename from"),
        _spec("RNTO", R, True, _write, "RNTO <path>: rename to"),
        _spec("SIZE", R, True, _read, "SIZE <path>: file size in bytes (RFC 3659)"),
        _spec("MDTM", R, True, _read, "MDTM <path>: modification time (RFC 3659)"),
        _spec("MFMT", R, True, _write, "MFMT <time> <path>: set modification time"),
        _spec("TYPE", R, True, _none, "TYPE <A|I|L 8>: transfer type"),
        _spec("MODE", R, True, _none, "MODE <S>: transfer mode"),
        _spec("STRU", R, True, _none, "STRU <F>: file structure"),
        _spec("ALLO", O, True, _none, "ALLO <size>: allocate (not needed)"),
        _spec("PASV", N, True, _none, "PASV: passive mode"),
        _spec("EPSV", O, True, _none, "EPSV [1|2|ALL]: extended passive mode (RFC 2428)"),
        _spec("PORT", R, True, _none, "PORT h1,h2,h3,h4,p1,p2: active mode"),
        _spec("EPRT", R, True, _none, "EPRT |af|addr|port|: extended active mode (RFC 2428)"),
        _spec("LIST", O, True, _read, "LIST [path|dir/pattern]: list a directory, or the names matching"
              " a pattern (* ? [...])"),
        _spec("NLST", O, True, _read, "NLST [path|dir/pattern]: list names, or the names matching"
              " a pattern (* ? [...])"),
        _spec("MLSD", O, True, _read, "MLSD [path]: machine listing (RFC 3659; no patterns)"),
        _spec("MLST", O, True, _read, "MLST [path]: facts about one entry (RFC 3659)"),
        _spec("RETR", R, True, _read, "RETR <path>: download"),
        _spec("STOR", R, True, _write, "STOR <path>: upload"),
        _spec("APPE", R, True, _write, "APPE <path>: append"),
        _spec("STOU", O, True, _write, "STOU: upload to a unique name"),
        _spec("REST", R, True, _none, "REST <offset>: restart a transfer at offset"),
        _spec("ABOR", N, True, _none, "ABOR: abort the running transfer", during_transfer=True),
        _spec("SITE", R, True, _none, "SITE <cmd>: site commands (HELP SITE lists them)"),
        _spec("AUTH", R, False, _none, "AUTH TLS: protect the control connection (RFC 4217)"),
        _spec("PBSZ", R, False, _none, "PBSZ 0: protection buffer size (RFC 4217)"),
        _spec("PROT", R, False, _none, "PROT P|C: protect data connections or not (RFC 4217)"),
        _spec("CCC", N, False, _none, "CCC: clear the control connection (refused)"),
    )
}

#: the SITE sub-commands there are (``HELP SITE`` and ``SITE HELP`` list them)
SITE_COMMANDS: dict[str, str] = {
    "HELP": "SITE HELP [cmd]: help on SITE commands",
}

# Recognised but deliberately not implemented: 502 rather than 500 (RFC 959 4.2).
NOT_IMPLEMENTED = frozenset(
    {"ACCT", "ADAT", "SMNT", "LPRT", "LPSV", "MIC", "CONF", "ENC"}
)

# Telnet (RFC 854): IAC and the commands that follow it.
IAC, DONT, DO, WONT, WILL, SB, SE = 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF0
#: a stray Synch (Data Mark) or Interrupt Process byte some clients send before ABOR
#: without its IAC (the urgent byte of an RFC 959 4.1.3 abort, read inline)
_STRAY = b"\xf2\xf4"
_PREFIX = (b"\xff", b"\xf2", b"\xf4")


def strip_telnet(line: bytes) -> tuple[bytes, bytes]:
    """The line without the Telnet commands before its verb, and the refusals to send back:
    an FTP server supports no Telnet option, so ``IAC WILL x`` gets ``IAC DONT x`` and
    ``IAC DO x`` gets ``IAC WONT x`` (RFC 854's "refuse and go on"); WONT/DONT need no
    answer; a subnegotiation ``IAC SB ... IAC SE`` and two-byte commands (IP, DM, NOP...)
    are dropped. Only the start of the line is read this way: an IAC inside the argument
    stays (it is not valid UTF-8, so the command gets 501, never a changed file name)."""
    answer = bytearray()
    i, n = 0, len(line)
    while i < n:
        if line[i] in _STRAY:
            i += 1
            continue
        if line[i] != IAC:
            break
        command = line[i + 1] if i + 1 < n else None
        if command is None or command == IAC:
            break  # a lone IAC, or IAC IAC (a data byte 255): no command here
        if command in (WILL, WONT, DO, DONT):
            if i + 2 < n:
                option = line[i + 2]
                if command == WILL:
                    answer += bytes((IAC, DONT, option))
                elif command == DO:
                    answer += bytes((IAC, WONT, option))
            i += 3
        elif command == SB:
            end = line.find(bytes((IAC, SE)), i + 2)
            i = n if end < 0 else end + 2
        else:
            i += 2
    return line[i:], bytes(answer)


def parse_line(raw: bytes) -> Command:
    """Parse one control line (without or with its CRLF).

    Raises FtpError(500) for an unparsable line and FtpError(501) for invalid UTF-8.
    The argument keeps inner spaces verbatim: file names may contain them (RFC 959 says
    the argument is everything after the single space following the verb). Telnet
    commands are removed (see :func:`strip_telnet`); a line that held only Telnet
    negotiation to refuse is a Command with an empty verb (and no reply of its own).
    """
    line = raw.rstrip(b"\r\n")
    telnet = b""
    if line[:1] in _PREFIX:
        line, telnet = strip_telnet(line)
        if telnet and not line.strip():
            return Command("", "", telnet)
    if len(line) > MAX_LINE:
        raise FtpError(500, "Command line too long")
    verb_bytes, _, arg_bytes = line.partition(b" ")
    if not verb_bytes.isalpha() or len(verb_bytes) > 8:
        raise FtpError(500, "Syntax error, command unrecognized")
    verb = verb_bytes.decode("ascii").upper()
    try:
        arg = arg_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FtpError(501, "Invalid UTF-8 in argument (RFC 2640 requires UTF-8)") from exc
    if "\x00" in arg:
        raise FtpError(501, "NUL character in argument")
    return Command(verb, arg, telnet)


def lookup(command: Command) -> CommandSpec:
    """The spec for a command, or the right error for an unknown verb or bad argument."""
    spec = COMMANDS.get(command.verb)
    if spec is None:
        if command.verb in NOT_IMPLEMENTED:
            raise FtpError(502, f"{command.verb} not implemented")
        raise FtpError(500, f"Unknown command {command.verb[:16]!r}")
    if spec.arg is Arg.REQUIRED and not command.arg.strip():
        raise FtpError(501, f"{command.verb} needs an argument")
    if spec.arg is Arg.NONE and command.arg.strip():
        raise FtpError(501, f"{command.verb} takes no argument")
    return spec


def feature_lines(mlst_enabled: Iterable[str] = MLST_FACTS, tls: bool = False) -> list[str]:
    """FEAT body (RFC 2389): exactly the extensions implemented. The MLST line marks the
    facts currently enabled (by OPTS MLST) with ``*`` (RFC 3659 7.8). ``tls``: the server
    has a certificate, so AUTH TLS, PBSZ and PROT are offered (RFC 4217 section 6)."""
    enabled = set(mlst_enabled)
    facts = "".join(f"{f}{'*' if f in enabled else ''};" for f in MLST_FACTS)
    return [
        *(["AUTH TLS"] if tls else []),
        "EPRT",
        "EPSV",
        "MDTM",
        "MFMT",
        f"MLST {facts}",
        *(["PBSZ", "PROT"] if tls else []),
        "REST STREAM",
        "SIZE",
        "TVFS",
        "UTF8",
    ]


def _rows(verbs: list[str]) -> list[str]:
    return [" ".join(f"{v:<5}" for v in verbs[i : i + 8]) for i in range(0, len(verbs), 8)]


def help_lines() -> list[str]:
    return ["The following commands are recognized:", *_rows(sorted(COMMANDS)), "Help OK."]


def site_help_lines() -> list[str]:
    """The reply to ``HELP SITE`` / ``SITE HELP``: every SITE sub-command there is."""
    return ["The following SITE commands are recognized:", *_rows(sorted(SITE_COMMANDS)), "Help OK."]
