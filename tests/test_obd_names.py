"""The static list of python-OBD command names is python-OBD's own."""

from __future__ import annotations

import obd

from eccm.obd import names


def test_the_names_are_python_obds() -> None:
    theirs = {key for key in vars(obd.commands) if obd.commands.has_name(key)}
    assert theirs == names.COMMAND_NAMES


def test_has_name_answers_as_python_obd() -> None:
    for name in ("RPM", "ELM_VOLTAGE", "rpm", "NOPE", "modes", ""):
        assert names.has_name(name) == bool(obd.commands.has_name(name))


def test_value_names_are_the_commands_a_row_can_log() -> None:
    from eccm.obd.values import is_loggable

    for name in names.COMMAND_NAMES:
        assert names.is_value_name(name) == is_loggable(obd.commands[name]), name
    assert not names.is_value_name("NOPE")
