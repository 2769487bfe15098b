"""The files a user copies onto the Pi: udev rules, the systemd unit, the README picture."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "udev" / "99-eccm.rules"
UNIT = ROOT / "systemd" / "eccm.service"
PNG = ROOT / "images" / "architecture.png"
SVG = ROOT / "images" / "architecture.svg"
DRAWING_SCRIPT = ROOT / "images" / "make_architecture.py"

# One udev key/operator/value item, e.g. ATTRS{idVendor}=="0403" or SYMLINK+="obd".
ITEM = re.compile(
    r'^(?P<key>[A-Z_]+)(?:\{(?P<attr>[^}]+)\})?(?P<op>==|!=|\+=|-=|:=|=)"(?P<value>[^"]*)"$'
)
MATCH_ONLY = {"SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "KERNELS", "ATTRS", "DRIVERS", "ACTION"}
ASSIGN_ONLY = {"SYMLINK", "GROUP", "MODE", "OWNER"}
KNOWN_KEYS = MATCH_ONLY | ASSIGN_ONLY | {"ENV"}

Rule = list[tuple[str, str | None, str, str]]


def parse_rule(line: str) -> Rule:
    """Split a rule line into (key, attribute, operator, value); fail on anything else."""
    items: Rule = []
    for raw in line.split(","):
        m = ITEM.match(raw.strip())
        assert m, f"not a key/operator/value item: {raw.strip()!r} in {line!r}"
        key, attr, op, value = m["key"], m["attr"], m["op"], m["value"]
        assert key in KNOWN_KEYS, f"unexpected key {key} in {line!r}"
        if key in MATCH_ONLY:
            assert op in ("==", "!="), f"{key} only compares, got {op} in {line!r}"
        if key in ASSIGN_ONLY:
            assert op in ("=", "+=", ":="), f"{key} only assigns, got {op} in {line!r}"
        items.append((key, attr, op, value))
    return items


def active_rules() -> list[Rule]:
    lines = RULES.read_text().splitlines()
    return [parse_rule(ln) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def commented_example_rules() -> list[Rule]:
    """Rules shown commented out, for the user to uncomment: they must be valid as well."""
    lines = RULES.read_text().splitlines()
    return [parse_rule(ln[2:]) for ln in lines if ln.startswith("# SUBSYSTEM")]


def value(rule: Rule, key: str, attr: str | None = None, op: str | None = None) -> str | None:
    for k, a, o, v in rule:
        if k == key and a == attr and (op is None or o == op):
            return v
    return None


def test_every_rule_names_a_tty_obd_or_gnss_readable_by_dialout() -> None:
    rules = active_rules()
    assert rules
    for rule in rules:
        assert value(rule, "SUBSYSTEM", op="==") == "tty", rule
        assert value(rule, "SYMLINK", op="+=") in ("obd", "gnss"), rule
        assert value(rule, "GROUP") == "dialout", rule
        assert value(rule, "MODE") == "0660", rule


def test_the_rules_cover_the_common_chips_each_under_one_name() -> None:
    names: dict[tuple[str | None, str | None], set[str | None]] = {}
    for rule in active_rules():
        vid, pid = value(rule, "ATTRS", "idVendor"), value(rule, "ATTRS", "idProduct")
        # sysfs writes the numbers as lowercase hex and udev compares strings.
        assert vid and re.fullmatch(r"[0-9a-f]{4}", vid), rule
        assert pid and re.fullmatch(r"[0-9a-f]{4}", pid), rule
        names.setdefault((vid, pid), set()).add(value(rule, "SYMLINK"))
    clashes = {chip: n for chip, n in names.items() if len(n) > 1}
    assert not clashes, f"one chip given both names: {clashes}"
    assert {chip for chip, n in names.items() if n == {"obd"}} == {
        ("0403", "6001"),
        ("0403", "6015"),
        ("1a86", "7523"),
    }
    assert {chip for chip, n in names.items() if n == {"gnss"}} == {
        ("1546", "01a7"),
        ("1546", "01a8"),
        ("1546", "01a9"),
        ("10c4", "ea60"),
        ("067b", "2303"),
    }


def test_commented_examples_tell_same_chip_devices_apart_correctly() -> None:
    examples = commented_example_rules()
    by_serial = [r for r in examples if value(r, "ATTRS", "serial")]
    by_port = [r for r in examples if value(r, "KERNELS")]
    assert {value(r, "SYMLINK") for r in by_serial} == {"obd", "gnss"}
    assert {value(r, "SYMLINK") for r in by_port} == {"obd", "gnss"}
    for rule in by_serial + by_port:
        # Without the vendor in the same rule, a serial-less chip matches the root hub's serial.
        assert value(rule, "ATTRS", "idVendor"), rule
    for rule in by_port:
        # All parent keys must match one device; an interface ("1-1.2:1.0") has no idVendor.
        assert ":" not in (value(rule, "KERNELS") or ""), rule
    assert any(value(r, "KERNEL") == "rfcomm0" for r in examples), "Bluetooth example missing"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    # Hand-parsed: systemd repeats keys (Environment=) and configparser would merge them.
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        assert current is not None, f"key before any section: {line!r}"
        key, sep, val = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.append((key.strip(), val.strip()))
    return sections


def values_of(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def test_unit_restarts_forever_and_runs_start_sh_from_the_install_directory() -> None:
    unit = parse_unit(UNIT.read_text())
    service = unit["Service"]
    assert values_of(service, "Restart") == ["always"]
    assert values_of(service, "RestartSec") == ["5"]
    assert values_of(unit["Unit"], "StartLimitIntervalSec") == ["0"]
    (exec_start,) = values_of(service, "ExecStart")
    assert exec_start.startswith("/") and exec_start.endswith("/start.sh")
    (workdir,) = values_of(service, "WorkingDirectory")
    assert Path(exec_start).parent == Path(workdir), "edit both paths together"
    config = [v for v in values_of(service, "Environment") if v.startswith("ECCM_CONFIG=")]
    assert config == [f"ECCM_CONFIG={workdir}/config.ini"]
    assert values_of(service, "User") == ["pi"]
    assert "dialout" in " ".join(values_of(service, "SupplementaryGroups")).split()
    assert values_of(unit["Install"], "WantedBy") == ["multi-user.target"]


def test_unit_stops_cleanly_and_starts_without_a_network() -> None:
    unit = parse_unit(UNIT.read_text())
    service = unit["Service"]
    assert values_of(service, "KillSignal") == ["SIGTERM"]
    # eccm needs up to 10 s for its last upload after SIGTERM, plus closing the file.
    (stop,) = values_of(service, "TimeoutStopSec")
    assert int(stop) > 10
    assert "network-online.target" in " ".join(values_of(unit["Unit"], "After")).split()
    for key in ("Wants", "Requires", "Requisite", "BindsTo"):
        assert not any("network" in v for v in values_of(unit["Unit"], key)), key


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_every_line_of_the_unit(tmp_path: Path) -> None:
    install = tmp_path / "eccm"
    install.mkdir()
    start = install / "start.sh"
    start.write_text("#!/bin/sh\nexit 0\n")
    start.chmod(0o755)
    unit = tmp_path / "eccm.service"
    unit.write_text(UNIT.read_text().replace("/home/pi/eccm", str(install)))
    # verify reports unknown keys and bad values as warnings with exit status 0: read them.
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    complaints = [ln for ln in (done.stdout + done.stderr).splitlines() if "eccm.service" in ln]
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_architecture_picture_is_a_small_png_sharp_at_readme_width() -> None:
    data = PNG.read_bytes()
    width, height = png_size(data)
    assert width >= 900 and height >= 400
    assert len(data) < 200 * 1024
    assert ET.parse(SVG).getroot().tag == "{http://www.w3.org/2000/svg}svg"


def test_drawing_script_redraws_the_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is a drawing tool, not a dependency")
    spec = importlib.util.spec_from_file_location("make_architecture", DRAWING_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the script is executed.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path)])
    width, _ = png_size((tmp_path / "architecture.png").read_bytes())
    assert width == png_size(PNG.read_bytes())[0]
    assert (tmp_path / "architecture.svg").stat().st_size > 0


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("car.ini", "{cwd}/car.ini"),  # from where the user typed, not the repository
        ("sub/car.ini", "{cwd}/sub/car.ini"),
        ("/etc/eccm.ini", "/etc/eccm.ini"),
        ("~/car.ini", "~/car.ini"),  # eccm expands it
        (None, "config.ini"),  # the boot entry's own, in the repository
    ],
)
def test_start_sh_takes_a_relative_eccm_config_from_where_it_was_typed(
    tmp_path: Path, given: str | None, expected: str
) -> None:
    """Found: `ECCM_CONFIG=car.ini ~/eccm/start.sh` looked for ~/eccm/car.ini, since
    start.sh changes into the repository first."""
    env = {k: v for k, v in os.environ.items() if k != "ECCM_CONFIG"}
    if given is not None:
        env["ECCM_CONFIG"] = given
    cwd, out = run_start_sh(tmp_path, [], env)
    assert out == ["run", "--config", expected.format(cwd=cwd)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "car.ini"], ["run", "--config", "config.ini", "--config", "{cwd}/car.ini"]),
        (["--config=sub/c.ini"], ["run", "--config", "config.ini", "--config={cwd}/sub/c.ini"]),
        (["--config", "/etc/e.ini"], ["run", "--config", "config.ini", "--config", "/etc/e.ini"]),
        (["--config", "~/e.ini"], ["run", "--config", "config.ini", "--config", "~/e.ini"]),
        (
            ["--demo", "--dir", "d", "--duration", "5"],
            ["demo", "--dir", "{cwd}/d", "--duration", "5"],
        ),
        (["--demo"], ["demo"]),  # the default demo-data/ stays in the repository
        (["--config"], ["run", "--config", "config.ini", "--config"]),  # eccm says what is missing
    ],
)
def test_start_sh_takes_relative_paths_on_its_command_line_from_where_they_were_typed(
    tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    """Found: `~/eccm/start.sh --config car.ini` looked for ~/eccm/car.ini (and the demo's
    --dir made its folder in the repository)."""
    env = {k: v for k, v in os.environ.items() if k != "ECCM_CONFIG"}
    cwd, out = run_start_sh(tmp_path, args, env)
    assert out == [a.format(cwd=cwd) for a in expected]


def test_start_sh_typed_in_the_root_folder_names_a_relative_config_once_slashed(
    tmp_path: Path,
) -> None:
    """Found: `cd / && ECCM_CONFIG=config.ini ~/eccm/start.sh` said "configuration file
    '//config.ini' does not exist"."""
    env = {k: v for k, v in os.environ.items() if k != "ECCM_CONFIG"}
    env["ECCM_CONFIG"] = "config.ini"
    _cwd, out = run_start_sh(tmp_path, ["--config", "c.ini"], env, cwd=Path("/"))
    assert out == ["run", "--config", "/config.ini", "--config", "/c.ini"]


def test_start_sh_finishes_a_venv_a_python_without_venv_support_left_half_made(
    tmp_path: Path,
) -> None:
    """Found: on a Debian without python3-venv the first ./start.sh stops with Debian's
    'ensurepip is not available' and leaves .venv/bin/python behind; once the user had
    installed python3-venv as told, every ./start.sh failed with '.venv/bin/pip: No such
    file or directory' until .venv was deleted by hand."""
    install = tmp_path / "eccm"
    (install / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "start.sh", install / "start.sh")
    shutil.copy(ROOT / "pyproject.toml", install / "pyproject.toml")
    left = install / ".venv" / "bin" / "python"  # all the failed venv made
    left.write_text("#!/bin/sh\nexit 0\n")
    left.chmod(0o755)
    # A python3 with venv support now: -m venv makes pip, and pip installs an eccm that
    # says what it was given.
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "python").write_text("#!/bin/sh\nexit 0\n")
    (kit / "pip").write_text(
        '#!/bin/sh\nd=$(dirname "$0")\n'
        'printf \'#!/bin/sh\\necho eccm "$@"\\n\' > "$d/eccm"\nchmod +x "$d/eccm"\n'
    )
    python3 = kit / "python3"
    python3.write_text(
        f'#!/bin/sh\n[ "$1 $2" = "-m venv" ] || exit 3\n'
        f'mkdir -p "$3/bin" && cp {kit}/python {kit}/pip "$3/bin/"\n'
    )
    for tool in ("python", "pip", "python3"):
        (kit / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "ECCM_CONFIG"}
    env["PYTHON"] = str(python3)
    done = subprocess.run(
        [str(install / "start.sh")], cwd=install, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "eccm run --config config.ini\n"


def run_start_sh(
    tmp_path: Path, args: list[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[Path, list[str]]:
    """start.sh run from another folder (``cwd``, a new one by default), with an installed
    eccm that prints its arguments: (that folder, the arguments eccm was given)."""
    install = tmp_path / "eccm"
    (install / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "start.sh", install / "start.sh")
    shutil.copy(ROOT / "pyproject.toml", install / "pyproject.toml")
    digest = subprocess.run(
        ["sha256sum", "pyproject.toml"], cwd=install, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    (install / ".venv" / ".eccm-installed").write_text(digest + "\n")
    # The installed eccm stands in as a script that says what it was given.
    eccm = install / ".venv" / "bin" / "eccm"
    eccm.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    eccm.chmod(0o755)
    # The demo's extras count as installed: its python imports anything, weed is there.
    for tool in ("python", "weed"):
        (install / ".venv" / "bin" / tool).write_text("#!/bin/sh\nexit 0\n")
        (install / ".venv" / "bin" / tool).chmod(0o755)
    if cwd is None:
        cwd = tmp_path / "elsewhere"
        cwd.mkdir()
    done = subprocess.run(
        [str(install / "start.sh"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return cwd, done.stdout.splitlines()
