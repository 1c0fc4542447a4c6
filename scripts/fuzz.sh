#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each).
#   scripts/fuzz.sh            # all targets, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh route
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Crashes are saved
# under fuzz/artifacts/<target>/ and the run exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(config_parse route api_body state_load)
fi
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  seeds=()
  # The example configs seed the parser (libFuzzer only writes into the first directory).
  [ "$target" = config_parse ] && seeds=(../examples)
  echo "== fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
