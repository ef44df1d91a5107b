#!/usr/bin/env bash
# Runs VTrace's whole test suite in .venv, installing it and the `test` extra first if they are
# missing (./setup.sh --extra test --no-demo: nothing is installed when they are current).
# Extra arguments go to pytest (e.g. ./test.sh -k blend). Exit code: pytest's.
set -uo pipefail
cd "$(dirname "$0")" || exit 1
./setup.sh --extra test --no-demo || exit $?
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
