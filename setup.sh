#!/usr/bin/env bash
# VTrace setup, from a clone: creates .venv (if missing), installs VTrace into it (editable,
# CPU torch by default), then runs VTrace end to end on a generated 7 s demo song with Demucs'
# tiny built-in model (no download) and says what each output is.
#
#   ./setup.sh                      CPU torch (PyTorch's CPU wheel index when reachable)
#   VTRACE_TORCH=cuda ./setup.sh    CUDA torch (PyPI's Linux build, CUDA 12); or --cuda
#   VTRACE_TORCH=cu128 ./setup.sh   CUDA torch from PyTorch's cu128 index (any cuXYZ it has)
#   ./setup.sh --extra web          also install an extra (web, cluster, midi, sota, test)
#   ./setup.sh --no-demo            install only
#
# Idempotent: when .venv holds this pyproject.toml's install (a stamp records its hash, the
# torch build and the extras), pip is not run at all. pip's full output: .venv/setup.log.
set -uo pipefail
cd "$(dirname "$0")" || exit 1

VENV=.venv
LOG=$VENV/setup.log
STAMP=$VENV/.vtrace-install
TORCH_PIN="torch==2.13.0"
CPU_INDEX=https://download.pytorch.org/whl/cpu
PY=${PYTHON:-python3}
TORCH=${VTRACE_TORCH:-cpu}
DEMO=1
EXTRAS=()
while [ $# -gt 0 ]; do
    case $1 in
        --cuda) TORCH=cuda ;;
        --cpu) TORCH=cpu ;;
        --no-demo) DEMO=0 ;;
        --extra) shift; EXTRAS+=("${1:?--extra needs a name}") ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown option $1 (see ./setup.sh --help)" >&2; exit 2 ;;
    esac
    shift
done

STEP=""
step() { STEP=$1; echo "==> $1"; }
fail() {  # fail "what to do"  [log]: name the step, show the end of the log, say what to do
    echo "setup.sh: step '$STEP' failed." >&2
    if [ "${2:-}" = log ] && [ -f "$LOG" ]; then
        echo "--- last lines of $LOG ---" >&2
        tail -n 15 "$LOG" >&2
        echo "---" >&2
        if grep -q "No space left on device" "$LOG"; then
            set -- "the disk is full: free space (about 3 GB is needed), then rerun ./setup.sh"
        fi
    fi
    echo "setup.sh: $1" >&2
    exit 1
}
pip_run() {  # pip_run ARGS...: pip into the venv, output appended to the log
    echo "+ pip $*" >>"$LOG"
    "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >>"$LOG" 2>&1
}

# ---------------------------------------------------------------- prerequisites
step "check Python"
command -v "$PY" >/dev/null 2>&1 || fail "no $PY on PATH: install Python >= 3.11 (sudo apt-get install python3 python3-venv)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    fail "$("$PY" -V 2>&1) is too old: VTrace needs Python >= 3.11 (yt-dlp 2026); set PYTHON=/path/to/python3.11"
if ! command -v ffmpeg >/dev/null 2>&1; then
    echo "note: no system ffmpeg; VTrace uses the one imageio-ffmpeg installs (sudo apt-get install ffmpeg for the system one)"
fi

# ---------------------------------------------------------------- virtual environment
if [ ! -x "$VENV/bin/python" ]; then
    step "create the virtual environment $VENV"
    if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        fail "Python's venv module is missing: install python3-venv: sudo apt-get install python3-venv"
    fi
    if ! out=$("$PY" -m venv "$VENV" 2>&1); then
        rm -rf "$VENV"
        echo "$out" | tail -n 5 >&2
        fail "could not create $VENV: install python3-venv (sudo apt-get install python3-venv) and check the disk"
    fi
fi
touch "$LOG" 2>/dev/null || fail "cannot write $LOG: check permissions and disk space"

# ---------------------------------------------------------------- install (skipped when current)
want_hash=$(cat pyproject.toml | "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
have_hash="" have_torch="" have_extras=""
if [ -f "$STAMP" ]; then
    { read -r have_hash; read -r have_torch; read -r have_extras; } <"$STAMP"
fi
all_extras=$(printf '%s\n' $have_extras ${EXTRAS[@]+"${EXTRAS[@]}"} | sort -u | tr '\n' ' ' | sed 's/ *$//')
current=1
[ "$have_hash" = "$want_hash" ] && [ "$have_torch" = "$TORCH" ] && [ -x "$VENV/bin/vtrace" ] || current=0
for e in ${EXTRAS[@]+"${EXTRAS[@]}"}; do
    case " $have_extras " in *" $e "*) ;; *) current=0 ;; esac
done
if [ "$current" = 1 ]; then
    echo "==> VTrace is installed and current in $VENV (pyproject.toml unchanged): nothing to install"
else
    avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
    if [ -n "$avail_kb" ] && [ "$avail_kb" -lt 3000000 ]; then
        step "check disk space"
        fail "only $((avail_kb / 1024)) MB free here; the environment needs about 3 GB (1.8 GB installed plus downloads): free some space and rerun"
    fi
    echo "(pip's full output: $LOG)"

    step "install torch 2.13.0 ($TORCH)"
    if [ -n "$have_torch" ] && [ "$have_torch" != "$TORCH" ]; then
        "$VENV/bin/python" -m pip uninstall -y torch >>"$LOG" 2>&1
    fi
    case $TORCH in
        cpu)
            if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('$CPU_INDEX/torch/', timeout=5)" >/dev/null 2>&1; then
                pip_run "$TORCH_PIN" --index-url "$CPU_INDEX" || fail "pip could not install torch from $CPU_INDEX: check the network and rerun ./setup.sh" log
            else
                echo "    PyTorch's CPU index is not reachable: using the configured package index"
                pip_run "$TORCH_PIN" || fail "pip could not install torch: check the network (or pip's index settings: pip config list) and rerun ./setup.sh" log
            fi ;;
        cuda)
            pip_run "$TORCH_PIN" || fail "pip could not install torch: check the network and rerun ./setup.sh" log ;;
        cu[0-9]*)
            pip_run "$TORCH_PIN" --index-url "https://download.pytorch.org/whl/$TORCH" ||
                fail "pip could not install torch from https://download.pytorch.org/whl/$TORCH: check that PyTorch publishes 2.13.0 for $TORCH" log ;;
        *) fail "VTRACE_TORCH=$TORCH: use cpu, cuda or a PyTorch CUDA index name such as cu128" ;;
    esac

    spec="."
    [ -n "$all_extras" ] && spec=".[$(echo "$all_extras" | tr ' ' ',')]"
    step "install VTrace ($spec, editable)"
    # The constraint keeps the torch build installed above (an extra never replaces it).
    echo "$TORCH_PIN" >"$VENV/constraints.txt"
    pip_run -e "$spec" -c "$VENV/constraints.txt" ||
        fail "pip could not install VTrace's dependencies: see the lines above, fix (network, disk), rerun ./setup.sh" log
    "$VENV/bin/vtrace" --version >/dev/null 2>&1 || fail "the vtrace command does not run after the install: see $LOG" log
    printf '%s\n%s\n%s\n' "$want_hash" "$TORCH" "$all_extras" >"$STAMP"
    echo "    installed: $("$VENV/bin/vtrace" --version), $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')${all_extras:+, extras: $all_extras}"
fi

[ "$DEMO" = 1 ] || exit 0

# ---------------------------------------------------------------- demo run
step "make the demo song"
"$VENV/bin/python" scripts/demo.py make demo/songs || fail "could not write demo/songs: check disk space"
step "run VTrace on it (demucs_unittest: Demucs' tiny built-in model, no download)"
"$VENV/bin/vtrace" demo/songs --model demucs_unittest --separated-dir demo/separated \
    -o demo/output --log-dir demo/logs -ba 0.1 --device cpu ||
    fail "VTrace failed on the demo song: see the lines above and the log in demo/logs/"
"$VENV/bin/python" scripts/demo.py show demo/output demo/separated ||
    fail "an expected output is missing (above)"
echo
echo "Done. Use it:  .venv/bin/vtrace SONGS_OR_FOLDERS_OR_LINKS   (or: source .venv/bin/activate; vtrace --help)"
