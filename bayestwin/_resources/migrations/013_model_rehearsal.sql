-- Migration 013: the rehearsal a model ran on its own history at fit time.
--
-- After a fit, the model runs placebo campaigns on its history (untreated units, or
-- fake start periods before the real ones, with a true effect of zero) and simulates
-- each as a user's simulation would. The row keeps what it found:
--
-- rehearsal_false_deploy_rate  share of the placebos recommended "deploy";
-- rehearsal_zero_coverage      share of the placebos whose 95% interval holds zero;
-- rehearsal_placebos           placebos simulated (K);
-- rehearsal_reason             why no placebo ran (too few untreated rows or units).
--
-- All four are NULL for a model fitted without a rehearsal, and for the rows written
-- before this migration.
--
-- Idempotent: safe to run again.

ALTER TABLE digital_twin_models
    ADD COLUMN IF NOT EXISTS rehearsal_false_deploy_rate DOUBLE PRECISION;
ALTER TABLE digital_twin_models
    ADD COLUMN IF NOT EXISTS rehearsal_zero_coverage DOUBLE PRECISION;
ALTER TABLE digital_twin_models
    ADD COLUMN IF NOT EXISTS rehearsal_placebos INTEGER;
ALTER TABLE digital_twin_models
    ADD COLUMN IF NOT EXISTS rehearsal_reason TEXT;
