#!/usr/bin/env bash
# Creates .venv if needed, installs ECCM with its test extras, runs lint, types and tests.
# Exit code 0 only if everything passed. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"

echo "== ruff" && .venv/bin/ruff check eccm tests bench && .venv/bin/ruff format --check eccm tests bench
echo "== mypy" && .venv/bin/mypy
echo "== pytest" && .venv/bin/pytest "$@"
