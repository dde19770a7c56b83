-- weight: 2
SELECT count(*) FROM audit_log WHERE at > now() - interval '1 minute';
