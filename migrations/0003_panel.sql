-- The compliance panel: accounts, their brands, sessions, and the append-only audit log.
CREATE TABLE panel_users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'compliance', 'viewer')),
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE panel_grants (
    name       TEXT NOT NULL REFERENCES panel_users (name) ON DELETE CASCADE,
    brand_code BIGINT NOT NULL,
    PRIMARY KEY (name, brand_code)
);

CREATE TABLE panel_sessions (
    token_sha256 BYTEA PRIMARY KEY,
    name         TEXT NOT NULL REFERENCES panel_users (name) ON DELETE CASCADE,
    csrf         TEXT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX panel_sessions_by_name ON panel_sessions (name);

CREATE TABLE panel_audit (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    brand_code BIGINT,
    detail     TEXT NOT NULL
);

-- Append-only: what was done stays written.
CREATE FUNCTION panel_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'panel_audit is append-only';
END;
$$;
CREATE TRIGGER panel_audit_no_change BEFORE UPDATE OR DELETE ON panel_audit
    FOR EACH ROW EXECUTE FUNCTION panel_audit_append_only();
