#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 5), starting from the committed seeds.
#
#   bash fuzz/run.sh [SECONDS]
#
# Needs a nightly toolchain (override with FUZZ_TOOLCHAIN); installs cargo-fuzz if missing.
# The committed corpus in fuzz/corpus/<target> is copied to fuzz/target/corpus/<target> first,
# so new inputs never land in the repository. Crashes are saved in fuzz/artifacts/<target>/.
# Exits non-zero if any target crashes, after running them all.
set -euo pipefail

seconds="${1:-5}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
    echo "usage: $0 [SECONDS]  (a positive whole number of seconds per target)" >&2
    exit 2
fi
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
targets=(wire config responder initiator reach channel controller node)

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "==> building ${targets[*]}"
cargo "+$toolchain" fuzz build --fuzz-dir fuzz

failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="fuzz/target/corpus/$target"
    log="fuzz/target/logs/$target.log"
    mkdir -p "$corpus" "$(dirname "$log")"
    cp -R "fuzz/corpus/$target/." "$corpus/"
    echo "==> fuzzing $target for ${seconds}s"
    status=0
    cargo "+$toolchain" fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
        tee "$log" || status=$?
    if [[ "$status" -ne 0 ]]; then
        failed+=("$target")
        summary+=("$target: FAILED (exit $status), see $log and fuzz/artifacts/$target/")
    else
        done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)"
        summary+=("$target: ok, ${done_line:-no summary line}")
    fi
done

echo "==> summary"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz targets failed: ${failed[*]}" >&2
    exit 1
fi
