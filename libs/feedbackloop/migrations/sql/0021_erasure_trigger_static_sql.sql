-- The erasure tombstone check of migration 0011, without its per-row cost: that trigger read the
-- row's time through to_jsonb(NEW) (the whole row, prompts included, turned into JSON) and looked
-- the tombstone up with EXECUTE format(...), which parses and plans a query for every row
-- inserted. Here each time column has its own trigger function reading NEW.<column> directly,
-- and the lookup is static SQL per schema, planned once per connection. Same rule: a row of an
-- erased user whose time is not after the erasure is dropped, silently, like ON CONFLICT DO
-- NOTHING; a row without a user, or with no time, is kept. The 0011 function stays (unused here).

CREATE FUNCTION public.is_erased_user_row(
    table_schema text, tenant text, user_id text, happened_at timestamptz
) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    digest text := public.erased_user_digest(user_id);
    erased boolean;
BEGIN
    IF table_schema = 'profiles' THEN
        RETURN EXISTS (SELECT 1 FROM profiles.erased_users e WHERE e.tenant_id = tenant
                       AND e.user_digest = digest AND e.erased_at >= happened_at);
    ELSIF table_schema = 'learner' THEN
        RETURN EXISTS (SELECT 1 FROM learner.erased_users e WHERE e.tenant_id = tenant
                       AND e.user_digest = digest AND e.erased_at >= happened_at);
    ELSIF table_schema = 'trainer' THEN
        RETURN EXISTS (SELECT 1 FROM trainer.erased_users e WHERE e.tenant_id = tenant
                       AND e.user_digest = digest AND e.erased_at >= happened_at);
    END IF;
    -- Any other schema with tombstones of its own: looked up like 0011 did.
    EXECUTE format(
        'SELECT EXISTS (SELECT 1 FROM %I.erased_users WHERE tenant_id = $1 AND user_digest = $2 '
        'AND erased_at >= $3)', table_schema)
        INTO erased
        USING tenant, digest, happened_at;
    RETURN erased;
END;
$$;

CREATE FUNCTION public.skip_erased_user_rows_by_occurred_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id IS NOT NULL
       AND public.is_erased_user_row(TG_TABLE_SCHEMA, NEW.tenant_id, NEW.user_id, NEW.occurred_at)
    THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION public.skip_erased_user_rows_by_last_seen_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id IS NOT NULL
       AND public.is_erased_user_row(TG_TABLE_SCHEMA, NEW.tenant_id, NEW.user_id, NEW.last_seen_at)
    THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION public.skip_erased_user_rows_by_changed_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id IS NOT NULL
       AND public.is_erased_user_row(TG_TABLE_SCHEMA, NEW.tenant_id, NEW.user_id, NEW.changed_at)
    THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER skip_erased_users ON profiles.feedback;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.feedback
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_occurred_at();
DROP TRIGGER skip_erased_users ON profiles.users;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.users
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_last_seen_at();
DROP TRIGGER skip_erased_users ON profiles.recommendation_sessions;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.recommendation_sessions
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_occurred_at();
DROP TRIGGER skip_erased_users ON profiles.recommendation_choices;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.recommendation_choices
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_occurred_at();
DROP TRIGGER skip_erased_users ON profiles.recommendation_interactions;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON profiles.recommendation_interactions
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_occurred_at();
DROP TRIGGER skip_erased_users ON learner.sessions;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON learner.sessions
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_occurred_at();
DROP TRIGGER skip_erased_users ON learner.choices;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON learner.choices
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_occurred_at();
DROP TRIGGER skip_erased_users ON trainer.responses;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON trainer.responses
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_occurred_at();
DROP TRIGGER skip_erased_users ON trainer.feedback;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON trainer.feedback
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_occurred_at();
DROP TRIGGER skip_erased_users ON trainer.consent;
CREATE TRIGGER skip_erased_users BEFORE INSERT ON trainer.consent
    FOR EACH ROW EXECUTE FUNCTION public.skip_erased_user_rows_by_changed_at();
