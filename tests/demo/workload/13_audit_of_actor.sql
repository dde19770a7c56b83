-- weight: 4
\set aid random(1, 50000)
SELECT id, action, at FROM audit_log WHERE actor_id = :aid;
