#!/usr/bin/env bash
# The stock db_bench (Debian rocksdb-tools) with the plugin preloaded: builds a
# small DB, reads it with a 1 MiB LRU block cache in front of the dropalloc
# secondary cache, and requires that RocksDB counted secondary cache hits and
# that the plugin's own statistics (DROPALLOC_STATS=1) agree. No timing is
# asserted. Skips only if db_bench is not installed (scripts/setup.sh
# installs it).
set -euo pipefail
plugin="$TEST_SRCDIR/$TEST_WORKSPACE/integrations/rocksdb/librocksdb_dropalloc.so"
db_bench=$(command -v db_bench || true)
[[ -z "$db_bench" && -x /usr/bin/db_bench ]] && db_bench=/usr/bin/db_bench
if [[ -z "$db_bench" ]]; then
  echo "SKIPPED: db_bench is not installed (Debian package rocksdb-tools; scripts/setup.sh installs it)"
  exit 0
fi
[[ -f "$plugin" ]] || { echo "plugin not found: $plugin"; exit 1; }
work="${TEST_TMPDIR:-$(mktemp -d)}"
db="$work/db"
common=(--db="$db" --num=50000 --value_size=400 --compression_type=lz4)

"$db_bench" "${common[@]}" --benchmarks=fillrandom,compact >"$work/fill.log" 2>&1 || {
  echo "db_bench fillrandom failed:"; cat "$work/fill.log"; exit 1; }

# Without the plugin, the URI is refused (this is what the preload changes).
if "$db_bench" "${common[@]}" --use_existing_db=1 --benchmarks=readrandom --reads=10 \
    --secondary_cache_uri='dropalloc://' >"$work/noplugin.log" 2>&1; then
  echo "db_bench accepted a dropalloc:// URI without the plugin:"; cat "$work/noplugin.log"; exit 1
fi

# A bad option is refused with a message naming it.
if LD_PRELOAD="$plugin" "$db_bench" "${common[@]}" --use_existing_db=1 --benchmarks=readrandom --reads=10 \
    --secondary_cache_uri='dropalloc://capacity=lots' >"$work/bad.log" 2>&1; then
  echo "db_bench accepted capacity=lots:"; cat "$work/bad.log"; exit 1
fi
grep -q "capacity=lots" "$work/bad.log" || { echo "no message naming capacity=lots:"; cat "$work/bad.log"; exit 1; }

for uri in 'dropalloc://' 'dropalloc://capacity=8M;seal=0'; do
  echo "== $uri"
  LD_PRELOAD="$plugin" DROPALLOC_STATS=1 "$db_bench" "${common[@]}" --use_existing_db=1 \
      --benchmarks=readrandom --reads=100000 --threads=2 --cache_size=1048576 \
      --secondary_cache_uri="$uri" --statistics >"$work/read.log" 2>&1 || {
    echo "db_bench readrandom failed:"; cat "$work/read.log"; exit 1; }
  grep -E "^readrandom|secondary.cache.hits|block.cache.hit COUNT" "$work/read.log"
  rocks_hits=$(awk '/rocksdb.secondary.cache.hits COUNT/ {print $4}' "$work/read.log")
  our_hits=$(awk '/^    hits:/ {print $2; exit}' "$work/read.log")
  sed -n '/dropalloc RocksDB secondary cache/,$p' "$work/read.log" | head -20
  if [[ -z "$rocks_hits" || "$rocks_hits" -eq 0 ]]; then
    echo "FAIL: db_bench reported no secondary cache hits ($uri)"; exit 1
  fi
  if [[ "$our_hits" != "$rocks_hits" ]]; then
    echo "FAIL: the plugin counted $our_hits hits, RocksDB $rocks_hits ($uri)"; exit 1
  fi
done
echo "PASS"
