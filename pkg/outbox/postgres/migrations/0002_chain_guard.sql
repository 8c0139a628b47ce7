-- Raised by the combined events+outbox statement when a stream's first
-- record does not continue the stream (its predecessor is missing), so
-- the whole statement fails instead of silently inserting fewer rows.
CREATE OR REPLACE FUNCTION {{.Guard}}(stream uuid, pos bigint) RETURNS bigint
LANGUAGE plpgsql AS $guard$
BEGIN
    RAISE EXCEPTION 'esflow: stream % does not reach position %', stream, pos
        USING ERRCODE = 'ES409', DETAIL = stream::text || ' ' || pos::text;
END
$guard$;
