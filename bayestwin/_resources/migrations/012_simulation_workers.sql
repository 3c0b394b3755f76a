-- Migration 012: which live worker owns a pending or running simulation.
--
-- worker_id     the service instance that runs the row (host:pid:random), written
--               when the row is created;
-- heartbeat_at  when that instance last reported the row alive; it does so every few
--               seconds while the row is pending or running.
--
-- A service that starts, and every live service every few seconds, marks failed each
-- pending or running row whose worker has not reported within a grace period: no live
-- worker owns it (its process stopped, or the server restarted). Rows written before
-- this migration have no worker and are judged by created_at.
--
-- Idempotent: safe to run again.

ALTER TABLE twin_simulations ADD COLUMN IF NOT EXISTS worker_id VARCHAR(64);
ALTER TABLE twin_simulations ADD COLUMN IF NOT EXISTS heartbeat_at TIMESTAMP WITH TIME ZONE;
