#!/usr/bin/env bash
# What ships: the release binary builds from the lock file and stays small (stripped, no
# debug info: under 40 MB), and the licences Cargo.toml names are in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
for f in LICENSE-MIT LICENSE-APACHE CHANGELOG.md; do
  [ -s "$f" ] || { echo "ship: $f is missing" >&2; exit 1; }
done
grep -q '^license = "MIT OR Apache-2.0"$' Cargo.toml || { echo "ship: Cargo.toml names another licence" >&2; exit 1; }
cargo build --release --locked --bin switchboard
size=$(stat -c %s target/release/switchboard)
limit=$((40 * 1024 * 1024))
echo "release binary: $size bytes (limit $limit)"
[ "$size" -lt "$limit" ] || { echo "ship: the release binary is over 40 MB" >&2; exit 1; }
./target/release/switchboard --version
