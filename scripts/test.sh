#!/usr/bin/env bash
# Set up (idempotent) and run the default test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PRESENTER_HOME=${PRESENTER_HOME:-$PWD/.cache-test}
exec .venv/bin/python -m pytest -q "$@"
