-- Erasure tombstones: an erased user's events that arrive after the erasure but occurred before
-- it (another topic, a retry, a replayed dead letter) must not bring the user's rows back.
--
-- Each consumer that stores user ids records, in its own schema, that (tenant, user) was erased
-- as of the erasure's occurred_at. The user is kept only as a SHA-256 digest of the already
-- tenant-keyed HMAC: enough to recognise the user's late events, and not the hash itself, so
-- nothing searchable by the user's hash survives the erasure. A trigger on every table holding
-- user ids drops (silently, like ON CONFLICT DO NOTHING) a row of an erased user whose time is
-- not after the erasure; events that occurred later (the user came back) are stored as usual.

CREATE FUNCTION public.erased_user_digest(user_id text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(user_id, 'UTF8')), 'hex')
$$;

CREATE TABLE profiles.erased_users (
    tenant_id    text NOT NULL,
    user_digest  text NOT NULL,
    erased_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_digest)
);
CREATE TABLE learner.erased_users (LIKE profiles.erased_users INCLUDING ALL);
CREATE TABLE trainer.erased_users (LIKE profiles.erased_users INCLUDING ALL);

-- BEFORE INSERT, FOR EACH ROW, with the name of the row's time column as the argument; the
-- tombstones are read from the schema of the table the trigger is on.
CREATE FUNCTION public.skip_erased_user_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    happened_at timestamptz := (to_jsonb(NEW) ->> TG_ARGV[0])::timestamptz;
    erased boolean;
BEGIN
    IF NEW.user_id IS NULL THEN
        RETURN NEW;
    END IF;
    EXECUTE format(
        'SELECT EXISTS (SELECT 1 FROM %I.erased_users WHERE tenant_id = $1 AND user_digest = $2 '
        'AND erased_at >= $3)', TG_TABLE_SCHEMA)
        INTO erased
        USING NEW.tenant_id, public.erased_user_digest(NEW.user_id), happened_at;
    IF erased THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.feedback
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('occurred_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.users
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('last_seen_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.recommendation_sessions
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('occurred_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.recommendation_choices
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('occurred_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.recommendation_interactions
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('occurred_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON learner.sessions
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('occurred_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON learner.choices
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('occurred_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON trainer.responses
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('occurred_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON trainer.feedback
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('occurred_at');
CREATE TRIGGER skip_erased_users BEFORE INSERT ON trainer.consent
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows('changed_at');
