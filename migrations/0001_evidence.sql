-- The system of record for what the company itself did: the consents it collected, with their
-- evidence (the burden of proof is the provider's), the upload outbox and every İYS answer,
-- sync cursors, brands, API clients and daily reports.
--
-- Times are timestamptz. consent_date and deadline are Turkey local times on the İYS side
-- (fixed UTC+3); they are stored as the instants they denote.
--
-- Personal data (KVKK): consent_events.recipient is the only column holding a phone number or
-- e-mail address. The role iysgate_report (created below when the migrating user may create
-- roles) can read everything a report needs except that column, the callers' idempotency keys
-- and the API key digests.

-- Service provider accounts (iysCode). The İYS API user's password is never stored here, only
-- where the process finds it (e.g. "env:IYS_PASSWORD_600001", "file:/run/secrets/iys").
CREATE TABLE providers (
    iys_code        bigint PRIMARY KEY CHECK (iys_code BETWEEN 1 AND 4294967295),
    name            text NOT NULL CHECK (name <> ''),
    credentials_ref text NOT NULL CHECK (credentials_ref <> ''),
    created_at      timestamptz NOT NULL
);

CREATE TABLE brands (
    brand_code               bigint PRIMARY KEY CHECK (brand_code BETWEEN 1 AND 4294967295),
    iys_code                 bigint NOT NULL REFERENCES providers,
    name                     text NOT NULL CHECK (name <> ''),
    -- Policy: allow TACIR recipients with no record (the opt-out reading of the law).
    allow_unregistered_tacir boolean NOT NULL DEFAULT false,
    created_at               timestamptz NOT NULL
);

-- Callers of the API. Only the SHA-256 digest of a key is kept; the key is shown once.
CREATE TABLE api_clients (
    name       text PRIMARY KEY CHECK (name <> ''),
    key_sha256 bytea NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
    created_at timestamptz NOT NULL
);

-- Which brands a client may ask about, and which retailers (bayi) it may name for each:
-- retailers_any, or the listed codes (none when empty).
CREATE TABLE client_brand_grants (
    client_name    text NOT NULL REFERENCES api_clients ON DELETE CASCADE,
    brand_code     bigint NOT NULL REFERENCES brands,
    retailers_any  boolean NOT NULL DEFAULT false,
    retailer_codes bigint[] NOT NULL DEFAULT '{}',
    granted_at     timestamptz NOT NULL,
    PRIMARY KEY (client_name, brand_code)
);

-- Every consent the company collected (ONAY or RET, HS_* sources). Append-only: a trigger
-- below refuses UPDATE, DELETE and TRUNCATE. Upload progress lives in upload_outbox.
CREATE TABLE consent_events (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    brand_code        bigint NOT NULL REFERENCES brands,
    -- İYS form: +905321234567 or a lower-case e-mail address. Personal data.
    recipient         text NOT NULL CHECK (recipient <> ''),
    recipient_type    text NOT NULL CHECK (recipient_type IN ('BIREYSEL', 'TACIR')),
    channel           text NOT NULL CHECK (channel IN ('ARAMA', 'MESAJ', 'EPOSTA')),
    status            text NOT NULL CHECK (status IN ('ONAY', 'RET')),
    source            text NOT NULL CHECK (source LIKE 'HS\_%'),
    consent_date      timestamptz NOT NULL,
    retailer_access   bigint[] NOT NULL DEFAULT '{}',
    -- The evidence: how and where the consent was captured, a document or form reference,
    -- and the system that captured it.
    capture_method    text NOT NULL CHECK (capture_method <> ''),
    capture_location  text NOT NULL CHECK (capture_location <> ''),
    document_ref      text,
    capturing_system  text NOT NULL CHECK (capturing_system <> ''),
    -- Who recorded it: the API client's name and the digest of the key it presented.
    client_name       text NOT NULL CHECK (client_name <> ''),
    client_key_sha256 bytea CHECK (length(client_key_sha256) = 32),
    -- A retried RecordConsent or a re-run import carries the same key and is stored once.
    idempotency_key   text NOT NULL CHECK (idempotency_key <> ''),
    recorded_at       timestamptz NOT NULL,
    UNIQUE (brand_code, idempotency_key)
);
CREATE INDEX consent_events_brand_recorded ON consent_events (brand_code, recorded_at);
CREATE INDEX consent_events_consent_key
    ON consent_events (brand_code, recipient, recipient_type, channel);

-- One row per event: its way into İYS. state: pending (waiting, from next_attempt_at),
-- in_flight (claimed until lease_until; claimable again once the lease has passed),
-- registered (İYS's transactionId), rejected (İYS's code; final), expired (past the
-- 3-business-day deadline unregistered; final). attempts counts claims.
CREATE TABLE upload_outbox (
    event_id          bigint PRIMARY KEY REFERENCES consent_events,
    brand_code        bigint NOT NULL,
    state             text NOT NULL
        CHECK (state IN ('pending', 'in_flight', 'registered', 'rejected', 'expired')),
    deadline          timestamptz NOT NULL,
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL,
    lease_until       timestamptz,
    transaction_id    text,
    iys_creation_date timestamptz,
    reject_code       text,
    reject_message    text,
    updated_at        timestamptz NOT NULL,
    CHECK ((state = 'in_flight') = (lease_until IS NOT NULL)),
    CHECK ((state = 'registered') = (transaction_id IS NOT NULL AND iys_creation_date IS NOT NULL)),
    CHECK ((state = 'rejected') = (reject_code IS NOT NULL))
);
-- Claims, expiry and the pending counts read only the open rows.
CREATE INDEX upload_outbox_open ON upload_outbox (deadline, event_id)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX upload_outbox_expired ON upload_outbox (event_id) WHERE state = 'expired';

-- İYS's answer to each attempt (append-only). outcome: registered, rejected, or retry
-- (a transient failure: network, 429, 5xx).
CREATE TABLE upload_attempts (
    event_id       bigint NOT NULL REFERENCES upload_outbox,
    attempt        integer NOT NULL CHECK (attempt > 0),
    finished_at    timestamptz NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('registered', 'rejected', 'retry')),
    http_status    integer,
    iys_code       text,
    iys_message    text,
    transaction_id text,
    iys_creation_date timestamptz,
    retry_at       timestamptz,
    PRIMARY KEY (event_id, attempt)
);

-- Where the pull of each (brand, source) stands: İYS's opaque `after`.
CREATE TABLE sync_cursors (
    iys_code     bigint NOT NULL,
    brand_code   bigint NOT NULL,
    source       text NOT NULL CHECK (source IN ('IYS', 'HS')),
    after        text,
    caught_up_at timestamptz,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (iys_code, brand_code, source)
);

-- The end-of-day reconciliation and action report, one per brand and day (regenerated in place).
CREATE TABLE daily_reports (
    brand_code  bigint NOT NULL REFERENCES brands,
    report_date date NOT NULL,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (brand_code, report_date)
);

-- Evidence is never rewritten: refuse UPDATE, DELETE and TRUNCATE on the append-only tables.
CREATE FUNCTION iysgate_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION iysgate_refuse_change();
CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON consent_events
    FOR EACH STATEMENT EXECUTE FUNCTION iysgate_refuse_change();
CREATE TRIGGER upload_attempts_append_only BEFORE UPDATE OR DELETE ON upload_attempts
    FOR EACH ROW EXECUTE FUNCTION iysgate_refuse_change();
CREATE TRIGGER upload_attempts_no_truncate BEFORE TRUNCATE ON upload_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION iysgate_refuse_change();

-- KVKK: a read-only role for reporting that cannot read recipients, idempotency keys or key
-- digests. Roles are cluster-wide: an existing one (e.g. made by a DBA) is reused. Without
-- the CREATEROLE privilege a missing role is left out with a notice; a DBA can create it and
-- re-run the grants below.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'iysgate_report') THEN
        BEGIN
            CREATE ROLE iysgate_report NOLOGIN;
        EXCEPTION
            -- Created meanwhile by another migrating database of the cluster.
            WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO iysgate_report', current_schema());
    GRANT SELECT ON providers, brands, upload_outbox, upload_attempts, sync_cursors,
        daily_reports TO iysgate_report;
    GRANT SELECT (id, brand_code, recipient_type, channel, status, source, consent_date,
        retailer_access, capture_method, capture_location, document_ref, capturing_system,
        client_name, recorded_at) ON consent_events TO iysgate_report;
EXCEPTION
    WHEN insufficient_privilege THEN
        RAISE NOTICE 'iysgate_report role not created or not granted: insufficient privilege';
END
$$;
