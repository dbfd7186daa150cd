-- kv holds every key's current record, tombstones included (deleted = 1,
-- value NULL) so that versions never repeat. Keys are BLOBs so that they
-- compare in byte order, like every other backend.
CREATE TABLE kv (
	key        BLOB    NOT NULL PRIMARY KEY,
	value      BLOB,
	version    INTEGER NOT NULL,
	created_at INTEGER NOT NULL, -- unix nanoseconds
	updated_at INTEGER NOT NULL, -- unix nanoseconds
	revision   INTEGER NOT NULL,
	deleted    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- changelog keeps the events of recent revisions for Watch(FromRevision);
-- idx orders the events of one revision (a transaction's ops).
CREATE TABLE changelog (
	revision  INTEGER NOT NULL,
	idx       INTEGER NOT NULL,
	type      INTEGER NOT NULL, -- datastore.EventType
	key       BLOB    NOT NULL,
	old_value BLOB,
	new_value BLOB,
	version   INTEGER NOT NULL,
	PRIMARY KEY (revision, idx)
) WITHOUT ROWID;

-- meta is a single row: the store's current revision and the compacted
-- revision (the change log holds no revision <= compacted).
CREATE TABLE meta (
	id        INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	revision  INTEGER NOT NULL,
	compacted INTEGER NOT NULL
);
INSERT INTO meta (id, revision, compacted) VALUES (1, 0, 0);
