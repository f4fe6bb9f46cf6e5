-- The audit trail: one row per security event, kept for AUDIT_RETENTION. user_id is NULL
-- when the event concerns no known account (a failed login for an unknown name); it is
-- not a foreign key, so the trail outlives the account it describes.
--
-- event, ip and user_agent are never looked up by equality or held unique, so they keep
-- the table's default (non-binary) utf8mb4 collation, like the other display columns;
-- store/mysql.rs still reads them through CONVERT(… USING utf8mb4), so that a server whose
-- default utf8mb4 collation is binary cannot make sqlx decode them as VARBINARY. ip is at
-- most 45 characters (an IPv6 address with an embedded IPv4 one); user_agent is TEXT,
-- not VARCHAR(512), so that in strict mode no caller's longer value can fail the write
-- (requests keep at most 256 characters of it).
CREATE TABLE audit_events (
    id         BIGINT      NOT NULL AUTO_INCREMENT,
    user_id    BIGINT,
    event      VARCHAR(64) NOT NULL,
    ip         VARCHAR(64),
    user_agent TEXT,
    created_at BIGINT      NOT NULL,
    PRIMARY KEY (id),
    KEY audit_events_user (user_id, created_at),
    KEY audit_events_created_at (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 ROW_FORMAT = DYNAMIC;
