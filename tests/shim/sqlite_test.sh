#!/usr/bin/env bash
# sqlite3: tables, indexes, joins, window functions, JSON and a big sort.
source "$TEST_SRCDIR/$TEST_WORKSPACE/tests/shim/compare_lib.sh"
need_program sqlite3

workload() {
  sqlite3 db.sqlite <<'SQL'
PRAGMA journal_mode = wal;
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v REAL, doc TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
INSERT INTO t SELECT i, printf('key-%06d', (i * 7919) % 100003), i * 0.5,
                     json_object('i', i, 'tags', json_array(i % 3, i % 5, substr('abcdefgh', 1 + i % 8)))
FROM n;
CREATE INDEX t_k ON t(k);
SELECT count(*), sum(v), min(k), max(k) FROM t;
SELECT k, count(*) AS c FROM t GROUP BY k ORDER BY c DESC, k LIMIT 5;
SELECT group_concat(id, ',') FROM (SELECT id FROM t WHERE k LIKE 'key-00001%' ORDER BY id);
SELECT json_extract(doc, '$.tags[2]') AS tag, count(*) FROM t GROUP BY tag ORDER BY tag;
SELECT id, sum(v) OVER (ORDER BY id ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM t WHERE id % 40000 = 0;
CREATE TABLE u AS SELECT id % 1000 AS g, upper(k) || replace(doc, 'i', 'I') AS s FROM t;
SELECT g, length(group_concat(s)) FROM u GROUP BY g ORDER BY g LIMIT 3;
SELECT count(*) FROM t JOIN u ON u.g = t.id % 1000 WHERE t.id < 200;
SELECT length(hex(zeroblob(100000))), typeof(zeroblob(100000));
DELETE FROM t WHERE id % 2 = 0;
VACUUM;
SELECT count(*), total(v) FROM t;
PRAGMA integrity_check;
SELECT * FROM no_such_table;
SQL
}

compare_runs sqlite3
