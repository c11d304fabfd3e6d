-- Every change to an API key is announced on the channel `feedbackloop_api_keys` with the key's
-- hash (an empty payload after TRUNCATE: forget every key). Each ingest and query process listens
-- and drops its cached answer at once, so a revoked key fails on its very next request instead of
-- after the cache TTL; the TTL remains the bound while a listener is disconnected.
CREATE FUNCTION auth.notify_api_key_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('feedbackloop_api_keys', '');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('feedbackloop_api_keys', OLD.key_hash);
    ELSE
        PERFORM pg_notify('feedbackloop_api_keys', NEW.key_hash);
        IF TG_OP = 'UPDATE' AND OLD.key_hash IS DISTINCT FROM NEW.key_hash THEN
            PERFORM pg_notify('feedbackloop_api_keys', OLD.key_hash);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed
    AFTER INSERT OR UPDATE OR DELETE ON auth.api_keys
    FOR EACH ROW EXECUTE FUNCTION auth.notify_api_key_change();

CREATE TRIGGER api_keys_truncated
    AFTER TRUNCATE ON auth.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION auth.notify_api_key_change();
