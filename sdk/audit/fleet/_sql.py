"""What the fleet log's readers ask PostgreSQL: the same questions as the file log's
(:mod:`veilpix.audit._records`), with the same row shapes, so records, the register, exports
and the console read either. ``pos`` (the entries' identity) is the position readers see
as a record's ``seq``; a writer's own ``seq`` numbers its chain."""

from __future__ import annotations

from veilpix.audit._records import FACT_PATHS, Queries

__all__ = [
    "COUNTS",
    "FLEET",
    "SELECT_CHAIN_ENTRIES",
    "SELECT_FACTS",
    "SELECT_FACTS_AFTER",
    "SELECT_IMAGE_CANDIDATES",
    "SELECT_RECORDS",
]

SELECT_RECORDS = (
    "SELECT b.pos, b.record, b.ts, b.subject, b.body, f.ts, f.body FROM veilpix.entries b"
    " LEFT JOIN veilpix.entries f ON f.record = b.record AND f.kind = 'finish'"
)

COUNTS = {
    "entries": "SELECT count(*) FROM veilpix.entries",
    "records": "SELECT count(*) FROM veilpix.entries WHERE kind = 'begin'",
    "pending": "SELECT count(*) FROM veilpix.entries b WHERE b.kind = 'begin' AND NOT EXISTS"
    " (SELECT 1 FROM veilpix.entries f WHERE f.record = b.record AND f.kind = 'finish')",
    "checkpoints": "SELECT count(*) FROM veilpix.checkpoints",
    "subjects": "SELECT count(*) FROM veilpix.subject_keys",
    "erasures": "SELECT count(*) FROM veilpix.entries WHERE kind = 'erase'",
    "prunes": "SELECT count(*) FROM veilpix.entries WHERE kind = 'prune'",
    "writers": "SELECT count(*) FROM veilpix.writers",
}

SELECT_IMAGE_CANDIDATES = (
    "SELECT pos, record, subject, strpos(body, %s) > 0,"
    " CASE WHEN subject IS NOT NULL THEN body::jsonb ->> 'sealed' END"
    " FROM veilpix.entries WHERE kind = 'begin' AND (strpos(body, %s) > 0 OR subject IS NOT NULL)"
    " ORDER BY pos DESC"
)


def _path(path: str) -> str:
    """``$.what.images[0].faces_blurred`` as a PostgreSQL path: ``'{what,images,0,faces_blurred}'``."""
    parts = path.removeprefix("$.").replace("[", ".").replace("]", "").split(".")
    return "'{" + ",".join(parts) + "}'"


# (pos, kind, record, ts, has a subject, facts as a JSON array text in FACT_PATHS order, every
# image's [blurred, unblurred, checked] when a begin has several, else NULL; then the writer
# and its seq): the file log's SELECT_FACTS, from jsonb (built from constant paths: no input
# reaches it)
_FACTS = (
    "SELECT pos, kind, record, ts, subject IS NOT NULL, jsonb_build_array("  # noqa: S608
    + ", ".join(f"d #> {_path(p)}" for p in FACT_PATHS)
    + ")::text, CASE WHEN kind = 'begin' AND jsonb_typeof(d #> '{what,image_count}') = 'number'"
    " AND (d #>> '{what,image_count}')::numeric > 1 THEN (SELECT jsonb_agg(jsonb_build_array("
    "i -> 'faces_blurred', i -> 'faces_unblurred', i -> 'faces_checked'))"
    " FROM jsonb_array_elements(CASE WHEN jsonb_typeof(d #> '{what,images}') = 'array'"
    " THEN d #> '{what,images}' ELSE '[]'::jsonb END) i)::text END, writer, seq"
)
SELECT_FACTS = (
    _FACTS  # noqa: S608 - constants only
    + " FROM (SELECT pos, kind, record, ts, subject, writer, seq, body::jsonb AS d"
    " FROM veilpix.entries WHERE pos > %s ORDER BY pos LIMIT %s) e"
)
# The same, after a cursor: each writer's chain from the entry after the one last read
# (arrays of writers and their seqs; a writer not named is read from its start), in the
# order of pos. Exact whatever order the writers' transactions committed in: a writer's own
# entries become visible in its order. (Each chain gives at most the limit's positions, the
# lowest of them all are read.)
SELECT_FACTS_AFTER = (
    "WITH picked AS (SELECT e.pos FROM veilpix.writers w"  # noqa: S608 - constants only
    " LEFT JOIN unnest(%s::int[], %s::bigint[]) AS c(w, s) ON c.w = w.id"
    " CROSS JOIN LATERAL (SELECT x.pos FROM veilpix.entries x WHERE x.writer = w.id"
    " AND x.seq > coalesce(c.s, 0) ORDER BY x.seq LIMIT %s) e ORDER BY e.pos LIMIT %s) "
    + _FACTS
    + " FROM (SELECT pos, kind, record, ts, subject, writer, seq, body::jsonb AS d"
    " FROM veilpix.entries WHERE pos IN (SELECT pos FROM picked)) f ORDER BY pos"
)

SELECT_CHAIN_ENTRIES = (
    "SELECT e.seq, e.kind, e.ts, e.hash, e.prev, c.id, c.ts, e.writer FROM veilpix.entries e"
    " LEFT JOIN LATERAL (SELECT id, ts FROM veilpix.checkpoints c WHERE c.writer = e.writer"
    " AND c.seq >= e.seq ORDER BY c.seq LIMIT 1) c ON true WHERE e.record = %s ORDER BY e.pos"
)


FLEET = Queries(
    records=SELECT_RECORDS + " WHERE b.kind = 'begin'",
    position="b.pos",
    by_id=SELECT_RECORDS + " WHERE b.record >= %s AND b.record < %s AND b.kind = 'begin' LIMIT 2",
    after=SELECT_RECORDS + " WHERE b.kind = 'begin' AND b.pos > %s ORDER BY b.pos LIMIT %s",
    at=lambda seqs: (
        SELECT_RECORDS + " WHERE b.kind = 'begin' AND b.pos = ANY(%s)",
        [list(seqs)],
    ),
    image_candidates=SELECT_IMAGE_CANDIDATES,
    chain_entries=SELECT_CHAIN_ENTRIES,
    reviews="SELECT pos, ts, body FROM veilpix.entries WHERE kind = 'review'"
    " ORDER BY pos DESC LIMIT %s",
    subject_kid="SELECT kid FROM veilpix.subject_keys WHERE tag = %s",
    wrapped="SELECT wrapped FROM veilpix.subject_keys WHERE kid = %s",
    counts=COUNTS,
    mark="%s",
    field=lambda row, path: f"{row}.body::jsonb #>> '{{{path.replace('.', ',')}}}'",
    finish_key="f.pos",
)
