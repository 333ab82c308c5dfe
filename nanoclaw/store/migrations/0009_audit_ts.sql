-- Issue 12: retention pruning deletes audit entries by age.
CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts);
