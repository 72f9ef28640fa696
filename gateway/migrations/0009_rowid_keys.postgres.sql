-- Nothing to do on PostgreSQL: its tables have no hidden row id, and a primary key is the one
-- index either way. (SQLite's tables are re-keyed by 0009_rowid_keys.sqlite.sql.)
SELECT 1;
