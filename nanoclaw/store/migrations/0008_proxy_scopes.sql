-- Which groups may use a credential mapping and which path prefixes below it;
-- JSON arrays of strings, NULL meaning every group / every path.
ALTER TABLE credential_mappings ADD COLUMN groups TEXT;
ALTER TABLE credential_mappings ADD COLUMN allowed_paths TEXT;
