#!/bin/bash
# Builds natgw policy crates into WebAssembly components.
#
#   scripts/build-policy.sh [CRATE_DIR ...] [-o OUT_DIR]
#
# With no CRATE_DIR it builds every crate of policies/ (built-in policies and test
# fixtures). Each crate is built on its own (a component carries exactly one world), for
# wasm32-unknown-unknown (no WASI), then wrapped with `wasm-tools component new`. The
# output is OUT_DIR/<crate_name>.wasm (default: target/policies).
#
# Toolchain: rustup's wasm32-unknown-unknown target when it is installed; otherwise
# Debian's rustc-web 1.96 with its std source and -Zbuild-std (rustup cannot download
# targets on machines without internet). The script says which it used.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/target/policies"
CRATES=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) OUT=$(realpath -m "$2"); shift 2 ;;
    -h|--help) sed -n 2,14p "$0"; exit 0 ;;
    *) CRATES+=("$(realpath "$1")"); shift ;;
  esac
done
if [ ${#CRATES[@]} -eq 0 ]; then
  for d in "$ROOT"/policies/*/ "$ROOT"/policies/fixtures/*/; do
    [ -f "$d/Cargo.toml" ] && ! grep -q '^\[workspace\]' "$d/Cargo.toml" && CRATES+=("${d%/}")
  done
fi
export PATH="$HOME/.cargo/bin:$PATH"
command -v wasm-tools >/dev/null || { echo "build-policy: wasm-tools is missing (scripts/setup.sh installs it)" >&2; exit 1; }
mkdir -p "$OUT"
TARGET=wasm32-unknown-unknown
# --locked when the crate's workspace has a lock file (ours do): reproducible builds.
locked() {
  local root; root=$(cd "$1" && cargo locate-project --workspace --message-format plain 2>/dev/null)
  [ -n "$root" ] && [ -f "$(dirname "$root")/Cargo.lock" ] && echo --locked
}
if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  ROUTE="rustup $(rustc --version | cut -d' ' -f2) with its $TARGET target"
  build() { cargo build --release $(locked "$1") --target "$TARGET" --manifest-path "$1/Cargo.toml" -q; }
elif [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && command -v wasm-ld-16 >/dev/null; then
  ROUTE="Debian rustc-web $(/usr/bin/rustc --version | cut -d' ' -f2) with -Zbuild-std (no rustup $TARGET target here)"
  build() {
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-16 \
      /usr/bin/cargo build --release $(locked "$1") -Zbuild-std=std,panic_abort --target "$TARGET" --manifest-path "$1/Cargo.toml" -q
  }
else
  echo "build-policy: no way to build for $TARGET: install rustup's target (rustup target add $TARGET)" \
       "or Debian's rustc-web, rust-web-src and lld-16 (scripts/setup.sh does)" >&2
  exit 1
fi
echo "build-policy: toolchain: $ROUTE"
for c in "${CRATES[@]}"; do
  name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$c/Cargo.toml" | head -1 | tr - _)
  build "$c"
  # Crates of the policies/ workspace share its target directory.
  tdir=$(cd "$c" && cargo metadata --format-version 1 --no-deps 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  core="$tdir/$TARGET/release/$name.wasm"
  wasm-tools component new "$core" -o "$OUT/$name.wasm"
  echo "build-policy: $OUT/$name.wasm ($(stat -c %s "$OUT/$name.wasm") bytes)"
done
