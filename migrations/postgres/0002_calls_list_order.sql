-- The list (`ORDER BY ended, started_at DESC LIMIT n`) mixes directions: with an ascending
-- `(ended, started_at)` index both engines sorted every finished call for each page (SQLite:
-- "USE TEMP B-TREE FOR RIGHT PART OF ORDER BY"; 300 ms p99 at 100,000 calls, bench/api_list.sh).
-- The index in the list's own order serves a page by reading its rows only.
DROP INDEX calls_list;
CREATE INDEX calls_list ON calls (ended, started_at DESC);
