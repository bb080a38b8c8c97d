"""parse_line and the COMMANDS table: pure tables plus property tests (no loop, no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsftpd.protocol.commands import (
    COMMANDS,
    MAX_LINE,
    NOT_IMPLEMENTED,
    SITE_COMMANDS,
    Arg,
    Command,
    feature_lines,
    help_lines,
    lookup,
    parse_line,
    site_help_lines,
)
from fsftpd.protocol.errors import FtpError


@pytest.mark.parametrize(
    ("raw", "verb", "arg"),
    [
        (b"NOOP\r\n", "NOOP", ""),
        (b"noop\r\n", "NOOP", ""),
        (b"NoOp\n", "NOOP", ""),
        (b"USER alice", "USER", "alice"),
        (b"RETR my file.txt\r\n", "RETR", "my file.txt"),
        (b"RETR  leading space\r\n", "RETR", " leading space"),
        (b"STOR trailing \r\n", "STOR", "trailing "),
        (b"CWD \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\r\n", "CWD", "\u00e9t\u00e9 \u65e5\u672c"),
        (b"\xff\xf4\xff\xf2ABOR\r\n", "ABOR", ""),  # Telnet IP + Synch before ABOR (RFC 959 4.1.3)
        (b"MFMT 20240101000000 a b", "MFMT", "20240101000000 a b"),
        (b"TYPE L 8\r\n", "TYPE", "L 8"),
    ],
)
def test_parse_line(raw: bytes, verb: str, arg: str) -> None:
    assert parse_line(raw) == Command(verb, arg)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\r\n", 500),
        (b"", 500),
        (b" NOOP\r\n", 500),
        (b"12 34\r\n", 500),
        (b"NO-OP\r\n", 500),
        (b"TOOLONGVB x\r\n", 500),  # verbs are at most 8 letters
        (b"\x00\x01\x02\r\n", 500),
        (b"\xc3\xa9\r\n", 500),  # non-ASCII verb
        (b"RETR \xc3(\r\n", 501),  # invalid UTF-8 argument (RFC 2640)
        (b"RETR \x80abc\r\n", 501),
        (b"RETR a\x00b\r\n", 501),  # NUL byte
        (b"RETR " + b"a" * MAX_LINE + b"\r\n", 500),
    ],
)
def test_parse_line_errors(raw: bytes, code: int) -> None:
    with pytest.raises(FtpError) as info:
        parse_line(raw)
    assert info.value.reply.code == code


def test_line_at_limit_is_accepted() -> None:
    raw = b"RETR " + b"a" * (MAX_LINE - 5)
    assert len(raw) == MAX_LINE
    assert parse_line(raw + b"\r\n").arg == "a" * (MAX_LINE - 5)


def test_command_str_hides_password() -> None:
    assert str(Command("PASS", "hunter2")) == "PASS ****"
    assert str(Command("USER", "bob")) == "USER bob"
    assert str(Command("NOOP", "")) == "NOOP"


@given(st.binary(max_size=300))
def test_parse_line_never_raises_anything_but_ftp_errors(raw: bytes) -> None:
    try:
        command = parse_line(raw)
    except FtpError as exc:
        assert exc.reply.code in (500, 501)
    else:
        if command.verb == "":  # a line of Telnet negotiation only: refusals to send back
            assert command.telnet and command.arg == ""
            return
        assert command.verb.isalpha() and command.verb.isupper() and len(command.verb) <= 8
        assert "\x00" not in command.arg


_arg_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=100
)


@given(st.sampled_from(sorted(COMMANDS)), _arg_text)
def test_parse_line_round_trips_any_utf8_argument(verb: str, arg: str) -> None:
    raw = f"{verb} {arg}\r\n".encode()
    assert parse_line(raw) == Command(verb, arg)
    assert parse_line(raw.lower() if arg.isascii() and arg.islower() else raw).verb == verb


@pytest.mark.parametrize(
    ("verb", "arg", "code"),
    [
        ("FOO", "", 500),
        ("XYZZY", "x", 500),
        ("SMNT", "x", 502),
        ("ACCT", "x", 502),
        ("CONF", "x", 502),
        ("LPRT", "x", 502),
        ("RETR", "", 501),
        ("RETR", "   ", 501),
        ("USER", "", 501),
        ("PWD", "x", 501),
        ("CDUP", "x", 501),
        ("PASV", "x", 501),
        ("NOOP", "x", 501),
    ],
)
def test_lookup_errors(verb: str, arg: str, code: int) -> None:
    with pytest.raises(FtpError) as info:
        lookup(Command(verb, arg))
    assert info.value.reply.code == code


def test_lookup_every_command() -> None:
    for verb, spec in COMMANDS.items():
        arg = "x" if spec.arg is Arg.REQUIRED else ""
        assert lookup(Command(verb, arg)) is spec


def test_the_issue_command_set_is_in_the_table() -> None:
    wanted = [
        "USER",
        "PASS",
        "QUIT",
        "REIN",
        "NOOP",
        "SYST",
        "FEAT",
        "OPTS",
        "HELP",
        "STAT",
        "PWD",
        "CWD",
        "CDUP",
        "MKD",
        "RMD",
        "DELE",
        "RNFR",
        "RNTO",
        "SIZE",
        "MDTM",
        "MFMT",
        "TYPE",
        "MODE",
        "STRU",
        "ALLO",
        "PASV",
        "EPSV",
        "PORT",
        "EPRT",
        "LIST",
        "NLST",
        "MLSD",
        "MLST",
        "RETR",
        "STOR",
        "APPE",
        "STOU",
        "REST",
        "ABOR",
        "XPWD",
        "XCWD",
        "XCUP",
        "XMKD",
        "XRMD",
        "SITE",  # SITE HELP only (issue 18): other SITE commands are 502
        "AUTH",
        "PBSZ",
        "PROT",
        "CCC",
    ]
    assert set(wanted) == set(COMMANDS)
    assert not NOT_IMPLEMENTED & set(COMMANDS)


@pytest.mark.parametrize(
    ("alias", "verb"), [("XPWD", "PWD"), ("XCWD", "CWD"), ("XCUP", "CDUP"), ("XMKD", "MKD"), ("XRMD", "RMD")]
)
def test_aliases_share_the_handler(alias: str, verb: str) -> None:
    a, b = COMMANDS[alias], COMMANDS[verb]
    assert (a.handler, a.arg, a.login, a.access) == (b.handler, b.arg, b.login, b.access)


def test_preconditions_are_sane() -> None:
    # Only the login dialogue, its protection (RFC 4217: AUTH, PBSZ, PROT before USER)
    # and harmless informational verbs work before login.
    before_login = {v for v, s in COMMANDS.items() if not s.login}
    assert before_login == {"USER", "PASS", "QUIT", "REIN", "NOOP", "SYST", "FEAT", "OPTS", "HELP",
                            "AUTH", "PBSZ", "PROT", "CCC"}
    # Verbs that change storage need write access; those that read it need read access.
    for verb in ("MKD", "XMKD", "RMD", "XRMD", "DELE", "RNFR", "RNTO", "STOR", "APPE", "STOU", "MFMT"):
        assert COMMANDS[verb].access.value == "write", verb
    for verb in ("RETR", "LIST", "NLST", "MLSD", "MLST", "SIZE", "MDTM", "CWD", "CDUP", "STAT"):
        assert COMMANDS[verb].access.value == "read", verb
    # RFC 959 4.1.3: these are served while a transfer runs.
    assert {v for v, s in COMMANDS.items() if s.during_transfer} == {"ABOR", "QUIT", "NOOP", "HELP", "STAT"}


def test_feature_lines_name_implemented_commands() -> None:
    features = feature_lines()
    for line in features:
        word = line.split()[0]
        if word in ("MLST",):
            assert {"MLST", "MLSD"} <= set(COMMANDS)
        elif word == "REST":
            assert line == "REST STREAM" and "REST" in COMMANDS
        elif word in ("TVFS", "UTF8"):
            continue  # properties of the server, not verbs
        else:
            assert word in COMMANDS, word
    assert {"EPRT", "EPSV", "MDTM", "MFMT", "SIZE", "UTF8"} <= {f.split()[0] for f in features}
    # Not implemented, so not advertised.
    assert not any(f.split()[0] in ("AUTH", "PBSZ", "PROT", "LANG", "HOST") for f in features)


def test_feature_lines_mark_enabled_mlst_facts() -> None:
    assert "MLST type*;size*;modify*;perm*;unique*;" in feature_lines()
    assert "MLST type;size*;modify;perm;unique*;" in feature_lines(["unique", "size"])
    assert "MLST type;size;modify;perm;unique;" in feature_lines([])


def test_help_lists_every_command() -> None:
    text = " ".join(help_lines())
    for verb in COMMANDS:
        assert verb in text.split()


def test_telnet_negotiation_is_refused_and_the_command_kept() -> None:
    from fsftpd.protocol.commands import strip_telnet

    line = b"\xff\xfb\x18\xff\xfd\x01\xff\xfa\x18\x00xterm\xff\xf0USER bob\r\n"
    command = parse_line(line)
    assert (command.verb, command.arg) == ("USER", "bob")
    assert command.telnet == b"\xff\xfe\x18\xff\xfc\x01"  # DONT terminal-type, WONT echo
    only = parse_line(b"\xff\xfd\x03\xff\xfc\x05\r\n")
    assert only.verb == "" and only.telnet == b"\xff\xfc\x03"
    assert strip_telnet(b"NOOP \xff\xfb\x01") == (b"NOOP \xff\xfb\x01", b"")  # only before the verb
    assert strip_telnet(b"\xff\xfa\x18 never ends") == (b"", b"")
    with pytest.raises(FtpError) as err:
        parse_line(b"MKD \xff\xfe\xc3(\r\n")
    assert err.value.reply.code == 501


def test_site_help_lists_exactly_the_site_commands() -> None:
    lines = site_help_lines()
    assert lines[0].startswith("The following SITE commands") and lines[-1] == "Help OK."
    assert " ".join(lines[1:-1]).split() == sorted(SITE_COMMANDS) == ["HELP"]
