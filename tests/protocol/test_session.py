"""Session sequencing (RFC 959 5.4): the transition table, REST, TYPE, REIN."""

from __future__ import annotations

import pytest

from fsftpd.protocol.errors import FtpError
from fsftpd.protocol.session import Login, Session, TransferType


def _run(session: Session, verb: str) -> None:
    session.before(verb)
    session.after(verb)


def _code(func: object, *args: object) -> int:
    with pytest.raises(FtpError) as info:
        func(*args)  # type: ignore[operator]
    return info.value.reply.code


def test_rnto_needs_rnfr_right_before() -> None:
    s = Session(login=Login.LOGGED_IN)
    assert _code(s.before, "RNTO") == 503
    _run(s, "RNFR")
    s.before("RNTO")  # fine right after RNFR


def test_any_other_command_cancels_a_pending_rename() -> None:
    s = Session(login=Login.LOGGED_IN)
    s.before("RNFR")
    s.rename_from = "/a"
    s.after("RNFR")
    _run(s, "NOOP")
    assert s.rename_from is None
    assert _code(s.before, "RNTO") == 503


def test_pass_needs_user() -> None:
    s = Session()
    assert _code(s.before, "PASS") == 503
    _run(s, "USER")
    s.login = Login.AWAITING_PASS
    s.before("PASS")
    # PASS may also follow other commands as long as USER put us in AWAITING_PASS
    _run(s, "NOOP")
    s.before("PASS")


def test_epsv_all_locks_out_other_data_setups() -> None:
    s = Session(login=Login.LOGGED_IN, epsv_all=True)
    for verb in ("PASV", "PORT", "EPRT"):
        assert _code(s.before, verb) == 503
    s.before("EPSV")


def test_rest() -> None:
    s = Session()
    assert s.set_rest("100") == 100
    assert s.take_rest("RETR") == 100
    assert s.take_rest("RETR") == 0  # consumed
    s.set_rest("5")
    assert _code(s.take_rest, "STOU") == 503
    assert s.rest_offset == 0
    for bad in ("-1", "x", "1.5", ""):
        assert _code(s.set_rest, bad) == 501
    s.set_rest("0")
    assert s.take_rest("LIST") == 0


@pytest.mark.parametrize(
    ("arg", "kind"),
    [
        ("A", TransferType.ASCII),
        ("a", TransferType.ASCII),
        ("A N", TransferType.ASCII),
        ("I", TransferType.BINARY),
        ("i", TransferType.BINARY),
        ("L 8", TransferType.BINARY),
    ],
)
def test_type(arg: str, kind: TransferType) -> None:
    s = Session()
    assert s.set_type(arg) is kind
    assert s.transfer_type is kind


@pytest.mark.parametrize(("arg", "code"), [("E", 504), ("A T", 504), ("L 7", 504), ("X", 501), ("Z 8", 501)])
def test_type_errors(arg: str, code: int) -> None:
    assert _code(Session().set_type, arg) == code


def test_reset_login() -> None:
    s = Session(
        login=Login.LOGGED_IN,
        user_name="u",
        cwd="/x",
        transfer_type=TransferType.ASCII,
        epsv_all=True,
        rest_offset=5,
        rename_from="/a",
    )
    s.reset_login()
    assert s == Session()
