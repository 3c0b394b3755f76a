-- Migration 011: digital twin tables (spec v4.2, section 3).
--
--   digital_twin_models     fitted twin generators, one row per registered version
--   twin_simulations        one row per simulation run and its result
--   twin_fidelity_tracking  simulations compared with the real experiments' outcomes
--
-- Safe to run on an empty database and inside the platform, and safe to run again:
-- every object is created only when it is missing. Objects are created in the first
-- schema of the search_path. The references to the platform's ml_experiments table are
-- added only when that table exists (last block).
--
-- bayestwin.store.tables mirrors this file; tests/test_store_migration.py proves the
-- two equal on a real PostgreSQL. Constraint and index names follow the naming
-- convention of bayestwin.store.tables.

-- ---------------------------------------------------------------------------------
-- Enums (domain_vocabulary.yaml v3.2.0)
-- ---------------------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typname = 'twin_type' AND n.nspname = current_schema()
    ) THEN
        CREATE TYPE twin_type AS ENUM ('hcp', 'patient', 'territory');
    END IF;

    IF NOT EXISTS (
        SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typname = 'simulation_status' AND n.nspname = current_schema()
    ) THEN
        CREATE TYPE simulation_status AS ENUM ('pending', 'running', 'completed', 'failed');
    END IF;

    IF NOT EXISTS (
        SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typname = 'simulation_recommendation' AND n.nspname = current_schema()
    ) THEN
        CREATE TYPE simulation_recommendation AS ENUM ('deploy', 'skip', 'refine');
    END IF;

    IF NOT EXISTS (
        SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typname = 'fidelity_grade' AND n.nspname = current_schema()
    ) THEN
        CREATE TYPE fidelity_grade AS ENUM ('excellent', 'good', 'fair', 'poor', 'unvalidated');
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------
-- 3.1 digital_twin_models
-- ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS digital_twin_models (
    model_id            UUID                     NOT NULL DEFAULT gen_random_uuid(),
    model_name          VARCHAR(255)             NOT NULL,
    twin_type           twin_type                NOT NULL,
    model_version       VARCHAR(100)             NOT NULL,
    -- Links to ml_experiments (foreign key added below when that table exists).
    mlflow_run_id       VARCHAR(255),
    training_config     JSONB                    NOT NULL DEFAULT '{}',
    feature_columns     TEXT[]                   NOT NULL DEFAULT '{}',
    target_columns      TEXT[]                   NOT NULL DEFAULT '{}',
    performance_metrics JSONB                    NOT NULL DEFAULT '{}',
    fidelity_score      DOUBLE PRECISION,
    is_active           BOOLEAN                  NOT NULL DEFAULT FALSE,
    brand               VARCHAR(100)             NOT NULL,
    created_at          TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at          TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- bayestwin additions
    fit_for_use         BOOLEAN                  NOT NULL DEFAULT TRUE,
    diagnostics_reason  TEXT,
    artifact_uri        TEXT,

    CONSTRAINT pk_digital_twin_models PRIMARY KEY (model_id),
    CONSTRAINT uq_digital_twin_models_model_name_model_version
        UNIQUE (model_name, model_version),
    CONSTRAINT ck_digital_twin_models_fidelity_score_range
        CHECK (fidelity_score >= 0 AND fidelity_score <= 1),
    CONSTRAINT ck_digital_twin_models_active_is_fit
        CHECK (NOT is_active OR fit_for_use)
);

CREATE INDEX IF NOT EXISTS ix_digital_twin_models_brand
    ON digital_twin_models (brand);
CREATE INDEX IF NOT EXISTS ix_digital_twin_models_twin_type
    ON digital_twin_models (twin_type);
CREATE INDEX IF NOT EXISTS ix_digital_twin_models_is_active
    ON digital_twin_models (is_active);
CREATE INDEX IF NOT EXISTS ix_digital_twin_models_created_at
    ON digital_twin_models (created_at);
CREATE INDEX IF NOT EXISTS ix_digital_twin_models_mlflow_run_id
    ON digital_twin_models (mlflow_run_id);
-- At most one active model per (brand, twin type).
CREATE UNIQUE INDEX IF NOT EXISTS uix_digital_twin_models_one_active
    ON digital_twin_models (brand, twin_type) WHERE is_active;

-- ---------------------------------------------------------------------------------
-- 3.2 twin_simulations
-- ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS twin_simulations (
    simulation_id           UUID                      NOT NULL DEFAULT gen_random_uuid(),
    model_id                UUID                      NOT NULL,
    -- References ml_experiments when that table exists (see the last block).
    experiment_design_id    VARCHAR(255),
    intervention_type       VARCHAR(100)              NOT NULL,
    intervention_config     JSONB                     NOT NULL DEFAULT '{}',
    twin_count              INTEGER                   NOT NULL,
    simulated_ate           DOUBLE PRECISION,
    simulated_ci_lower      DOUBLE PRECISION,
    simulated_ci_upper      DOUBLE PRECISION,
    simulation_status       simulation_status         NOT NULL DEFAULT 'pending',
    recommendation          simulation_recommendation,
    recommended_sample_size INTEGER,
    execution_time_ms       INTEGER,
    brand                   VARCHAR(100)              NOT NULL,
    created_at              TIMESTAMP WITH TIME ZONE  NOT NULL DEFAULT CURRENT_TIMESTAMP,
    completed_at            TIMESTAMP WITH TIME ZONE,
    -- bayestwin additions
    twin_type               twin_type                 NOT NULL,
    confidence_level        DOUBLE PRECISION          NOT NULL DEFAULT 0.95,
    random_seed             BIGINT,
    request_hash            VARCHAR(64),
    started_at              TIMESTAMP WITH TIME ZONE,
    error_message           TEXT,
    result                  JSONB,
    ate_draws               JSONB,
    twin_unit_ids           JSONB,

    CONSTRAINT pk_twin_simulations PRIMARY KEY (simulation_id),
    CONSTRAINT fk_twin_simulations_model_id_digital_twin_models
        FOREIGN KEY (model_id) REFERENCES digital_twin_models (model_id) ON DELETE RESTRICT,
    CONSTRAINT ck_twin_simulations_twin_count_positive
        CHECK (twin_count > 0),
    CONSTRAINT ck_twin_simulations_ci_ordered
        CHECK (simulated_ci_lower <= simulated_ci_upper),
    CONSTRAINT ck_twin_simulations_sample_size_non_negative
        CHECK (recommended_sample_size >= 0),
    CONSTRAINT ck_twin_simulations_execution_time_non_negative
        CHECK (execution_time_ms >= 0),
    CONSTRAINT ck_twin_simulations_confidence_level_range
        CHECK (confidence_level > 0 AND confidence_level < 1),
    CONSTRAINT ck_twin_simulations_random_seed_non_negative
        CHECK (random_seed >= 0),
    -- A completed row is whole: never a completed status without its result.
    CONSTRAINT ck_twin_simulations_completed_has_result
        CHECK (
            simulation_status <> 'completed'
            OR (
                simulated_ate IS NOT NULL
                AND simulated_ci_lower IS NOT NULL
                AND simulated_ci_upper IS NOT NULL
                AND completed_at IS NOT NULL
                AND result IS NOT NULL
            )
        ),
    CONSTRAINT ck_twin_simulations_failed_has_error
        CHECK (simulation_status <> 'failed' OR error_message IS NOT NULL)
);

CREATE INDEX IF NOT EXISTS ix_twin_simulations_model_id
    ON twin_simulations (model_id);
CREATE INDEX IF NOT EXISTS ix_twin_simulations_brand
    ON twin_simulations (brand);
CREATE INDEX IF NOT EXISTS ix_twin_simulations_twin_type
    ON twin_simulations (twin_type);
CREATE INDEX IF NOT EXISTS ix_twin_simulations_intervention_type
    ON twin_simulations (intervention_type);
CREATE INDEX IF NOT EXISTS ix_twin_simulations_simulation_status
    ON twin_simulations (simulation_status);
CREATE INDEX IF NOT EXISTS ix_twin_simulations_created_at
    ON twin_simulations (created_at);
CREATE INDEX IF NOT EXISTS ix_twin_simulations_experiment_design_id
    ON twin_simulations (experiment_design_id);
-- Result cache (procedural memory): same model, same request, same seed.
CREATE INDEX IF NOT EXISTS ix_twin_simulations_cache_key
    ON twin_simulations (model_id, request_hash, random_seed);

-- ---------------------------------------------------------------------------------
-- 3.3 twin_fidelity_tracking
-- ---------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS twin_fidelity_tracking (
    tracking_id            UUID                     NOT NULL DEFAULT gen_random_uuid(),
    simulation_id          UUID                     NOT NULL,
    -- References ml_experiments when that table exists (see the last block).
    actual_experiment_id   VARCHAR(255),
    simulated_ate          DOUBLE PRECISION         NOT NULL,
    actual_ate             DOUBLE PRECISION,
    prediction_error       DOUBLE PRECISION,
    fidelity_grade         fidelity_grade           NOT NULL DEFAULT 'unvalidated',
    validation_notes       TEXT,
    validated_at           TIMESTAMP WITH TIME ZONE,
    created_at             TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- bayestwin additions
    actual_se              DOUBLE PRECISION,
    standardized_error     DOUBLE PRECISION,
    pit                    DOUBLE PRECISION,
    in_predictive_interval JSONB                    NOT NULL DEFAULT '{}',
    predictive_intervals   JSONB                    NOT NULL DEFAULT '{}',
    model_fidelity_score   DOUBLE PRECISION,
    fidelity_warning       BOOLEAN                  NOT NULL DEFAULT FALSE,

    CONSTRAINT pk_twin_fidelity_tracking PRIMARY KEY (tracking_id),
    CONSTRAINT fk_twin_fidelity_tracking_simulation_id_twin_simulations
        FOREIGN KEY (simulation_id) REFERENCES twin_simulations (simulation_id)
        ON DELETE CASCADE,
    CONSTRAINT ck_twin_fidelity_tracking_prediction_error_non_negative
        CHECK (prediction_error >= 0),
    CONSTRAINT ck_twin_fidelity_tracking_actual_se_non_negative
        CHECK (actual_se >= 0),
    CONSTRAINT ck_twin_fidelity_tracking_pit_range
        CHECK (pit >= 0 AND pit <= 1),
    CONSTRAINT ck_twin_fidelity_tracking_model_fidelity_score_range
        CHECK (model_fidelity_score >= 0 AND model_fidelity_score <= 1)
);

CREATE INDEX IF NOT EXISTS ix_twin_fidelity_tracking_simulation_id
    ON twin_fidelity_tracking (simulation_id);
CREATE INDEX IF NOT EXISTS ix_twin_fidelity_tracking_actual_experiment_id
    ON twin_fidelity_tracking (actual_experiment_id);
CREATE INDEX IF NOT EXISTS ix_twin_fidelity_tracking_fidelity_grade
    ON twin_fidelity_tracking (fidelity_grade);
CREATE INDEX IF NOT EXISTS ix_twin_fidelity_tracking_created_at
    ON twin_fidelity_tracking (created_at);

-- ---------------------------------------------------------------------------------
-- References to the platform's ml_experiments table, only where it exists.
--
-- experiment_design_id and actual_experiment_id reference the single-column primary
-- key of ml_experiments. When that key is not a string type (e.g. UUID), the column
-- first takes the key's type (existing values are cast, so a value that is not a valid
-- key fails loudly here). mlflow_run_id references ml_experiments.mlflow_run_id when
-- that column exists and is unique; otherwise it stays a plain link to the MLflow run.
-- Deleting an experiment keeps the twin rows and sets the reference to NULL.
-- ---------------------------------------------------------------------------------
DO $$
DECLARE
    experiments regclass := to_regclass('ml_experiments');
    key_column  text;
    key_type    text;
    key_is_text boolean;
    tbl         text;
    col         text;
    con         text;
BEGIN
    IF experiments IS NULL THEN
        RAISE NOTICE 'ml_experiments does not exist: twin tables keep plain experiment ids';
        RETURN;
    END IF;

    SELECT a.attname, format_type(a.atttypid, a.atttypmod), ty.typcategory = 'S'
      INTO key_column, key_type, key_is_text
      FROM pg_index i
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
      JOIN pg_type ty ON ty.oid = a.atttypid
     WHERE i.indrelid = experiments AND i.indisprimary AND i.indnkeyatts = 1;

    IF key_column IS NULL THEN
        RAISE NOTICE 'ml_experiments has no single-column primary key: no references added';
    ELSE
        FOR tbl, col, con IN
            VALUES
                ('twin_simulations', 'experiment_design_id',
                 'fk_twin_simulations_experiment_design_id_ml_experiments'),
                ('twin_fidelity_tracking', 'actual_experiment_id',
                 'fk_twin_fidelity_tracking_actual_experiment_id_ml_experiments')
        LOOP
            IF NOT EXISTS (
                SELECT 1 FROM pg_constraint
                WHERE conname = con AND conrelid = to_regclass(tbl)
            ) THEN
                IF NOT key_is_text THEN
                    EXECUTE format(
                        'ALTER TABLE %I ALTER COLUMN %I TYPE %s USING %I::%s',
                        tbl, col, key_type, col, key_type
                    );
                END IF;
                EXECUTE format(
                    'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (%I) '
                    'REFERENCES ml_experiments (%I) ON DELETE SET NULL',
                    tbl, con, col, key_column
                );
            END IF;
        END LOOP;
    END IF;

    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'fk_digital_twin_models_mlflow_run_id_ml_experiments'
          AND conrelid = to_regclass('digital_twin_models')
    ) THEN
        IF EXISTS (
            SELECT 1
              FROM pg_index i
              JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = experiments AND i.indisunique AND i.indnkeyatts = 1
               AND i.indpred IS NULL AND a.attname = 'mlflow_run_id'
        ) THEN
            ALTER TABLE digital_twin_models
                ADD CONSTRAINT fk_digital_twin_models_mlflow_run_id_ml_experiments
                FOREIGN KEY (mlflow_run_id) REFERENCES ml_experiments (mlflow_run_id)
                ON DELETE SET NULL;
        ELSE
            RAISE NOTICE 'ml_experiments has no unique mlflow_run_id: mlflow_run_id stays a plain link';
        END IF;
    END IF;
END
$$;
