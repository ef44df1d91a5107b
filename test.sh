#!/usr/bin/env bash
# Runs VTrace's whole test suite in .venv, installing it and the `test` extra first if they are
# missing (./setup.sh --extra test --no-demo: nothing is installed when they are current).
# Extra arguments go to pytest (e.g. ./test.sh -k blend). Exit code: pytest's.
set -uo pipefail
cd "$(dirname "$0")" || exit 1
./setup.sh --extra test --no-demo || exit $?
# pytest starts with Ctrl-C's default action even when this script was started in the
# background (`./test.sh &` ignores SIGINT, a shell cannot undo that, and children would inherit
# it): the Ctrl-C tests send SIGINT to VTrace and expect exit code 130.
exec .venv/bin/python -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + sys.argv[1:])' "$@"
