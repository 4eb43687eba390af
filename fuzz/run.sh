#!/usr/bin/env bash
# Runs each fuzz target for a bounded time: fuzz/run.sh [SECONDS] (default 60 per target).
#
# Installs cargo-fuzz when missing. cargo-fuzz needs nightly compiler flags (-Zsanitizer);
# with only a stable toolchain, RUSTC_BOOTSTRAP=1 unlocks them. The seed corpus is rebuilt each
# run from the request cases in tests/cases, plus the shared conformance cases when present
# (../shared/conformance/cases, or $CONFORMANCE_CASES).
# Exits non-zero when a target crashes (libFuzzer leaves the input under fuzz/artifacts/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-60}
targets=(request proxy ws_frame)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
# Link the crate's pyo3 against the interpreter that builds the rest of the project.
export PYO3_PYTHON=${PYO3_PYTHON:-$(command -v python3)}

python3 seed.py ${CONFORMANCE_CASES:+"$CONFORMANCE_CASES"}

status=0
for target in "${targets[@]}"; do
    echo "==> fuzzing $target for ${seconds}s"
    mkdir -p "corpus/$target" "artifacts/$target"
    # libFuzzer stops at the first crash and exits non-zero.
    if ! cargo fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1; then
        echo "fuzz target $target FAILED; reproducer in fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit "$status"
