-- privacy-lock tool tables for sqlite.
-- Generated from privacy_lock/schema.py by `privacy-lock sql --dialect sqlite`; do not edit by hand (a test fails when they drift).

CREATE TABLE privacy_lock_audit (
	seq BIGINT NOT NULL, 
	occurred_at VARCHAR(32) NOT NULL, 
	action VARCHAR(32) NOT NULL, 
	subject VARCHAR(191), 
	lock_id BIGINT, 
	operator VARCHAR(191), 
	os_user VARCHAR(191), 
	host VARCHAR(191), 
	ticket VARCHAR(191), 
	reason TEXT, 
	details TEXT NOT NULL, 
	tool_version VARCHAR(32) NOT NULL, 
	prev_hash VARCHAR(64) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	mac VARCHAR(96), 
	PRIMARY KEY (seq)
);

CREATE INDEX ix_privacy_lock_audit_lock ON privacy_lock_audit (lock_id, seq);

CREATE INDEX ix_privacy_lock_audit_occurred_at ON privacy_lock_audit (occurred_at);

CREATE INDEX ix_privacy_lock_audit_subject ON privacy_lock_audit (subject);

CREATE TABLE privacy_lock_audit_head (
	id INTEGER NOT NULL, 
	seq BIGINT NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE privacy_lock_find_usage (
	usage_id INTEGER NOT NULL, 
	operator_key VARCHAR(191) NOT NULL, 
	os_account VARCHAR(191) NOT NULL, 
	searched_at VARCHAR(32) NOT NULL, 
	event_seq BIGINT NOT NULL, 
	PRIMARY KEY (usage_id)
);

CREATE INDEX ix_privacy_lock_find_usage_operator ON privacy_lock_find_usage (operator_key, searched_at);

CREATE INDEX ix_privacy_lock_find_usage_os_account ON privacy_lock_find_usage (os_account, searched_at);

CREATE TABLE privacy_lock_locks (
	lock_id INTEGER NOT NULL, 
	subject VARCHAR(191) NOT NULL, 
	active_subject VARCHAR(191), 
	state VARCHAR(16) NOT NULL, 
	operator VARCHAR(191) NOT NULL, 
	ticket VARCHAR(191) NOT NULL, 
	reason TEXT NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	updated_at VARCHAR(32) NOT NULL, 
	reverted_at VARCHAR(32), 
	reverted_by VARCHAR(191), 
	binding TEXT, 
	PRIMARY KEY (lock_id), 
	CONSTRAINT uq_privacy_lock_locks_active_subject UNIQUE (active_subject)
);

CREATE INDEX ix_privacy_lock_locks_subject ON privacy_lock_locks (subject);

CREATE TABLE privacy_lock_policy (
	name VARCHAR(64) NOT NULL, 
	value VARCHAR(64) NOT NULL, 
	set_by VARCHAR(191) NOT NULL, 
	set_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE privacy_lock_revert_requests (
	request_id INTEGER NOT NULL, 
	lock_id INTEGER NOT NULL, 
	subject VARCHAR(191) NOT NULL, 
	state VARCHAR(16) NOT NULL, 
	open_lock_id BIGINT, 
	requested_by VARCHAR(191) NOT NULL, 
	requested_os_user VARCHAR(191) NOT NULL, 
	requested_host VARCHAR(191) NOT NULL, 
	ticket VARCHAR(191) NOT NULL, 
	reason TEXT NOT NULL, 
	requested_at VARCHAR(32) NOT NULL, 
	approved_by VARCHAR(191), 
	approved_os_user VARCHAR(191), 
	approved_host VARCHAR(191), 
	approved_at VARCHAR(32), 
	requested_db_user VARCHAR(191), 
	approved_db_user VARCHAR(191), 
	finished_at VARCHAR(32), 
	outcome VARCHAR(16), 
	PRIMARY KEY (request_id), 
	CONSTRAINT uq_privacy_lock_revert_requests_open_lock UNIQUE (open_lock_id), 
	FOREIGN KEY(lock_id) REFERENCES privacy_lock_locks (lock_id)
);

CREATE INDEX ix_privacy_lock_revert_requests_state ON privacy_lock_revert_requests (state, request_id);

CREATE TABLE privacy_lock_snapshots (
	snapshot_id INTEGER NOT NULL, 
	lock_id INTEGER NOT NULL, 
	kind VARCHAR(64) NOT NULL, 
	item_id VARCHAR(191) NOT NULL, 
	original_text TEXT, 
	original_int BIGINT, 
	state VARCHAR(16) NOT NULL, 
	snapshotted_at VARCHAR(32) NOT NULL, 
	resolved_at VARCHAR(32), 
	PRIMARY KEY (snapshot_id), 
	CONSTRAINT uq_privacy_lock_snapshots_item UNIQUE (lock_id, kind, item_id), 
	FOREIGN KEY(lock_id) REFERENCES privacy_lock_locks (lock_id)
);

CREATE INDEX ix_privacy_lock_snapshots_pending ON privacy_lock_snapshots (lock_id, state, snapshot_id);

INSERT INTO privacy_lock_audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Recommended on every mapped content table (not created by the tool; review and run yourself):
-- apply walks one owner's items in id order and revert finds items by id, so each content
-- table needs an index on (owner column, id column), e.g. for the demo's tables:
--   CREATE INDEX ix_diaries_user_id_id ON diaries (user_id, id);
--   CREATE INDEX ix_photos_owner_id_id ON photos (owner_id, id);
