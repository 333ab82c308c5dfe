-- Tokens a run's agent used (summed over its result frames) and the model that reported them.
ALTER TABLE run_history ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_history ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_history ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_history ADD COLUMN cache_creation_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE run_history ADD COLUMN model TEXT;
