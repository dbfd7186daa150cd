#!/usr/bin/env bash
# Copies up to N entries (default 8) of the fuzz cache's corpus of one target
# into the package's testdata/fuzz, where `go test` runs them as seeds.
#   scripts/keep-fuzz-corpus.sh ./gossip FuzzReadSyncFrame [N]
set -euo pipefail
pkgdir=$1 target=$2 n=${3:-8}
pkg=$(cd "$pkgdir" && go list .)
src="$(go env GOCACHE)/fuzz/$pkg/$target"
dst="$pkgdir/testdata/fuzz/$target"
[ -d "$src" ] || { echo "no cached corpus in $src" >&2; exit 1; }
mkdir -p "$dst"
ls -S "$src" | head -n "$n" | while read -r f; do cp "$src/$f" "$dst/$f"; done
echo "$dst: $(ls "$dst" | wc -l) seeds"
