"""The control socket's request parser on its own: a line in, a typed request out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eccm.control.requests import (
    BEFORE_AUTH,
    COMMANDS,
    AuthHmac,
    AuthPlain,
    DtcClear,
    DtcConfirm,
    DtcRead,
    Get,
    Gnss,
    Help,
    Invalid,
    Ping,
    Quit,
    Request,
    Status,
    Supported,
    Trip,
    Upload,
    Watch,
    WatchOff,
    parse,
)
from eccm.service import SERVICE_CODES


def p(text: str) -> Request:
    return parse(text.encode())


def bad(request: Request, code: str = "bad_request") -> Invalid:
    assert isinstance(request, Invalid), request
    assert request.code == code and request.message
    return request


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("PING", Ping()),
        ("Help", Help()),
        ("quit", Quit()),
        ("SUPPORTED", Supported()),
        ("GNSS", Gnss()),
        ("status", Status()),
        ("TRIP", Trip()),
        ("UPLOAD", Upload()),
        ("DTC", DtcRead()),
        ("dtc clear", DtcClear()),
        ("DTC CLEAR CONFIRM 1A2b3C4d", DtcConfirm("1A2b3C4d")),  # the token as typed
        ("GET", Get(None)),
        ("get rpm SPEED rpm", Get(("RPM", "SPEED"))),
        ("WATCH", Watch(None, 1.0)),
        ("watch rpm every 0.5", Watch(("RPM",), 0.5)),
        ("WATCH EVERY 0.1", Watch(None, 0.1)),
        ("WATCH EVERY 3600", Watch(None, 3600.0)),
        ("watch off", WatchOff()),
        ("AUTH HMAC ABCDEF", AuthHmac("ABCDEF")),
        ("auth hmac 00ff", AuthHmac("00ff")),
        ("AUTH my secret  with spaces", AuthPlain("my secret  with spaces")),
        ("  PING\t", Ping()),
    ],
)
def test_valid_lines(line: str, expected: Request) -> None:
    assert p(line) == expected


@pytest.mark.parametrize(
    "line",
    ["WATCH RPM EVERY 0.05", "WATCH EVERY 0", "WATCH EVERY nan", "WATCH EVERY inf",
     "WATCH EVERY 1e9", "WATCH EVERY", "WATCH EVERY x", "WATCH EVERY 1 RPM",
     "WATCH EVERY 1_0", "WATCH EVERY ５",
     "DTC READ", "DTC CLEAR NOW", "DTC CLEAR CONFIRM", "DTC CLEAR CONFIRM a b",
     "SUPPORTED RPM", "TRIP now", "AUTH", "AUTH HMAC", "AUTH HMAC a b"],
)  # fmt: skip
def test_bad_arguments_name_their_command(line: str) -> None:
    assert bad(p(line)).word == line.split()[0].upper()


@pytest.mark.parametrize(
    "line",
    ["PING x", "ping and more", "HELP me", "HELP GET", "QUIT now", "SUPPORTED x", "GNSS x",
     "STATUS extra", "UPLOAD x", "UPLOAD now please", "TRIP x", "status\tverbose"],
)  # fmt: skip
def test_a_command_that_takes_no_argument_refuses_one(line: str) -> None:
    """Never ignored: `UPLOAD x` once started an upload, `STATUS extra` answered STATUS."""
    word = line.split()[0].upper()
    request = bad(p(line))
    assert request.word == word and request.close is None
    assert request.message == f"{word} takes no argument"


@pytest.mark.parametrize("line", ["WATCH OFF x", "watch off rpm", "WATCH OFF EVERY 1"])
def test_watch_off_with_a_word_after_it_names_that_word_the_slip(line: str) -> None:
    request = bad(p(line))  # not unknown_value 'OFF': OFF is valid, what follows is not
    assert request.word == "WATCH" and request.message == "WATCH OFF takes no argument"


@pytest.mark.parametrize("line", ["WATCH RPM OFF", "watch rpm speed off", "WATCH RPM OFF EVERY 1"])
def test_off_after_value_names_says_the_watch_stops_whole(line: str) -> None:
    request = bad(p(line))  # was unknown_value 'OFF', as if OFF were a misspelt value
    assert request.word == "WATCH" and request.message.startswith("WATCH OFF alone stops")


@pytest.mark.parametrize(
    "line",
    ["GET RPM SPEED x", "WATCH RPM SPEED EVERY 0.5", "WATCH RPM", "DTC CLEAR CONFIRM ab12cd34",
     "AUTH HMAC 00ff", "AUTH a secret with words"],
)  # fmt: skip
def test_commands_that_take_arguments_still_take_them(line: str) -> None:
    assert not isinstance(p(line), Invalid)


def test_every_command_word_alone_is_a_request() -> None:
    for word in COMMANDS - {"AUTH"}:
        assert not isinstance(p(word), Invalid), word
        assert not isinstance(p(f" {word.lower()}\t"), Invalid), word


def test_lines_that_are_no_command_are_answered_in_any_state() -> None:
    assert bad(p("")).word is None
    assert bad(p(" \t ")).word is None
    http = bad(p("GET / HTTP/1.1"))
    assert http.word is None and http.close == "HTTP request" and "HTTP" in http.message


@pytest.mark.parametrize("value", ["0.05", "0", "nan", "1e9", "x"])
def test_an_every_out_of_range_names_the_value_and_the_range(value: str) -> None:
    # It said only "EVERY takes seconds from 0.1 to 3600", not which value was refused.
    request = bad(p(f"WATCH RPM every {value}"))
    assert request.message == f"EVERY '{value}' is not valid: expected seconds from 0.1 to 3600"


def test_an_unknown_command_is_echoed_cut_short() -> None:
    request = bad(p("FROB" + "Q" * 500 + " x"), "unknown_command")
    assert request.word == "FROB" + "Q" * 500  # the gate still sees its word
    assert len(request.message) < 80


def test_a_plain_secret_never_shows_in_a_repr() -> None:
    assert "hunter2" not in repr(p("AUTH hunter2"))


def test_before_auth_words_are_commands() -> None:
    assert BEFORE_AUTH <= COMMANDS


@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_request(line: bytes) -> None:
    request = parse(line.replace(b"\n", b" "))
    if isinstance(request, Invalid):
        assert request.code in SERVICE_CODES | {"unknown_command"}
    else:
        assert request.word in COMMANDS
