#!/usr/bin/env bash
# Runs every cargo-fuzz target (or those named) for a set time each, starting from the saved
# corpus. Not part of CI: CI replays fuzz/corpus/ on stable through tests/fuzz_replay.rs.
#
#   bash fuzz/run.sh                      # every target, 60 s each
#   FUZZ_SECONDS=300 bash fuzz/run.sh signature_header
#
# cargo-fuzz is installed into .cache/cargo-fuzz (crates.io, --locked, checksums checked by
# cargo). libFuzzer needs a nightly compiler: the nightly toolchain when rustup has one, else
# the stable one with RUSTC_BOOTSTRAP=1. New inputs go to fuzz/target/corpus/<target>, not to
# the saved corpus; crashes to fuzz/artifacts/<target>. fuzz/README.md says what to keep.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH=${FUZZ_SECONDS:-60}
root=.cache/cargo-fuzz
if ! "$root/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --root "$root"
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v -- -fuzz)
fi
export PATH="$PWD/$root/bin:$PATH"
status=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/target/corpus/$target" fuzz/target/logs
    log="fuzz/target/logs/$target.log"
    echo "== $target: ${SECONDS_EACH}s (log: $log)"
    # -s none: no sanitizer (the library has no unsafe code of its own); debug assertions on.
    if ! cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz -s none --debug-assertions \
        "$target" "fuzz/target/corpus/$target" "fuzz/corpus/$target" \
        -- -max_total_time="$SECONDS_EACH" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        echo "   FAILED: see $log and fuzz/artifacts/$target/"
        status=1
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added)|^Done' "$log" | sed 's/^/   /' || true
done
exit $status
