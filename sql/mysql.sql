-- privacy-lock tool tables for mysql.
-- Generated from privacy_lock/schema.py by `privacy-lock sql --dialect mysql`; do not edit by hand (a test fails when they drift).

CREATE TABLE privacy_lock_audit (
	seq BIGINT NOT NULL COMMENT 'chain position', 
	occurred_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	action VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	subject VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	lock_id BIGINT, 
	operator VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	os_user VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	host VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	ticket VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	reason TEXT, 
	details TEXT NOT NULL COMMENT 'JSON: counts and other facts', 
	tool_version VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	prev_hash VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	hash VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	mac VARCHAR(96) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin COMMENT 'key id : HMAC of hash', 
	PRIMARY KEY (seq)
);

CREATE INDEX ix_privacy_lock_audit_lock ON privacy_lock_audit (lock_id, seq);

CREATE INDEX ix_privacy_lock_audit_occurred_at ON privacy_lock_audit (occurred_at);

CREATE INDEX ix_privacy_lock_audit_subject ON privacy_lock_audit (subject);

CREATE TABLE privacy_lock_audit_head (
	id INTEGER NOT NULL, 
	seq BIGINT NOT NULL, 
	hash VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	PRIMARY KEY (id)
);

CREATE TABLE privacy_lock_find_usage (
	usage_id BIGINT NOT NULL AUTO_INCREMENT, 
	operator_key VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	os_account VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	searched_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	event_seq BIGINT NOT NULL COMMENT 'the find event in the audit trail', 
	PRIMARY KEY (usage_id)
);

CREATE INDEX ix_privacy_lock_find_usage_operator ON privacy_lock_find_usage (operator_key, searched_at);

CREATE INDEX ix_privacy_lock_find_usage_os_account ON privacy_lock_find_usage (os_account, searched_at);

CREATE TABLE privacy_lock_locks (
	lock_id BIGINT NOT NULL AUTO_INCREMENT, 
	subject VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'the user (content owner) id, as text', 
	active_subject VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	state VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'active | reverted', 
	operator VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	ticket VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	reason TEXT NOT NULL, 
	created_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	updated_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	reverted_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	reverted_by VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	binding TEXT COMMENT 'JSON: per kind, the content binding used', 
	PRIMARY KEY (lock_id), 
	CONSTRAINT uq_privacy_lock_locks_active_subject UNIQUE (active_subject)
);

CREATE INDEX ix_privacy_lock_locks_subject ON privacy_lock_locks (subject);

CREATE TABLE privacy_lock_policy (
	name VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	value VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	set_by VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	set_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	PRIMARY KEY (name)
);

CREATE TABLE privacy_lock_revert_requests (
	request_id BIGINT NOT NULL AUTO_INCREMENT, 
	lock_id BIGINT NOT NULL, 
	subject VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'the user (content owner) id, as text', 
	state VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'pending | approved | done | rejected', 
	open_lock_id BIGINT, 
	requested_by VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	requested_os_user VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	requested_host VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	ticket VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	reason TEXT NOT NULL, 
	requested_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	approved_by VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	approved_os_user VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	approved_host VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	approved_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	requested_db_user VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	approved_db_user VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	finished_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
	outcome VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin COMMENT 'reverted | not-locked', 
	PRIMARY KEY (request_id), 
	CONSTRAINT uq_privacy_lock_revert_requests_open_lock UNIQUE (open_lock_id), 
	FOREIGN KEY(lock_id) REFERENCES privacy_lock_locks (lock_id)
);

CREATE INDEX ix_privacy_lock_revert_requests_state ON privacy_lock_revert_requests (state, request_id);

CREATE TABLE privacy_lock_snapshots (
	snapshot_id BIGINT NOT NULL AUTO_INCREMENT, 
	lock_id BIGINT NOT NULL, 
	kind VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	item_id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'the content row''s id, as text', 
	original_text TEXT, 
	original_int BIGINT, 
	state VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'locked | restored | conflict | gone', 
	snapshotted_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, 
	resolved_at VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, 
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
