#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 60), one after another; exits non-zero
# on the first crash. Usage: fuzz/run.sh [SECONDS] [TARGET...]
#
# cargo-fuzz needs a nightly compiler (for -Zsanitizer). With a nightly toolchain installed
# it is used; otherwise the stable compiler is told to accept nightly flags through
# RUSTC_BOOTSTRAP=1, which is what CI without nightly should do.
set -euo pipefail

seconds="${1:-60}"
shift || true
cd "$(dirname "$0")"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(parse_head chunked chunked_roundtrip proxy_header forwarded uwsgi static_headers)
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

# Seed the corpora with gunicorn's request corpus when the shared checkout has it.
seeds=../../shared/conformance/gunicorn-requests
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    if [ -d "$seeds" ] && { [ "$target" = parse_head ] || [ "$target" = chunked ]; }; then
        find "$seeds" -name '*.req' -exec cp -n {} "corpus/$target/" \; 2>/dev/null || true
    fi
done

"${fuzz[@]}" build >/dev/null
for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s"
    log="$(mktemp)"
    # A target's dictionary (dicts/TARGET.dict), when it has one, gives libFuzzer the
    # fields' tokens to splice in.
    dict=()
    if [ -f "dicts/$target.dict" ]; then
        dict=(-dict="dicts/$target.dict")
    fi
    # -rss_limit_mb bounds a leak; -timeout flags one input that takes over 10 s.
    if ! "${fuzz[@]}" run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 "${dict[@]}" \
        >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "== $target: CRASH (reproducer under fuzz/artifacts/$target/)"
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || tail -n 5 "$log"
    rm -f "$log"
done
