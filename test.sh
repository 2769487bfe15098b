#!/usr/bin/env bash
# Creates .venv if needed, installs ECCM with its test and report extras, runs lint, types
# and tests.
# Exit code 0 only if everything passed. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The report and spark extras: `eccm report`/`fleet` and the Spark schema's test (pyspark
# in local mode; ~490 MB, installed once into .venv).
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test,report,spark]"

# The browser tests drive Debian's chromium through Debian's chromium-driver (nothing
# downloads a browser at test time), the MQTT tests Debian's mosquitto broker, the
# encryption tests decrypt with Debian's age, pyspark runs on Debian's Java, the gpsd tests
# read NMEA through Debian's gpsd: installed here
# once when running as root.
if [ "$(id -u)" = 0 ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] \
    || [ ! -x /usr/sbin/mosquitto ] || [ ! -x /usr/bin/mosquitto_passwd ] \
    || [ ! -x /usr/bin/age ] || [ ! -x /usr/sbin/gpsd ] || ! command -v java >/dev/null; } \
    && command -v apt-get >/dev/null; then
    echo "== apt-get install chromium chromium-driver mosquitto age gpsd default-jre-headless"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        chromium chromium-driver mosquitto age gpsd default-jre-headless >/dev/null
fi

echo "== ruff" && .venv/bin/ruff check eccm tests bench && .venv/bin/ruff format --check eccm tests bench
echo "== mypy" && .venv/bin/mypy
# Two workers: most tests wait on a peer (the emulator's answer delay, SeaweedFS, a
# subprocess), so two halve the run on two cores (9 min 51 s -> 5 min 10 s here).
# ECCM_TEST_WORKERS=0 runs in one process (pdb, or a single test at once).
echo "== pytest" && .venv/bin/pytest -n "${ECCM_TEST_WORKERS:-2}" "$@"
