-- What an audited rule or budget would have done (docs/design.md §3.1): `shadow_of` names the
-- policy or budget (`ToolPolicy ns/name`, `ClusterToolPolicy name`, `Budget ns/name`),
-- `shadow_would` the decision it would have made. Counted per object into its `status.shadow`
-- and listed by `tollgate audit shadow`; only those records are indexed.
ALTER TABLE audit ADD COLUMN shadow_of TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN shadow_would TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS audit_shadow ON audit (shadow_would, time_us) WHERE shadow_would <> '';
