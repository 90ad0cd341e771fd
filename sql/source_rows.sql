--
-- What the payment trigger reads from a source row: amounts exactly (numeric
-- and integers by cast; floats, money and text refused whatever the session
-- says), one payment per primary key (a table without one refused, and one
-- whose key is deferrable or not valid; the key the same in every session),
-- and the grant held by the owner of the partition tree's root as well as
-- the partition's.
--
\set VERBOSITY default

-- this file's rows only: earlier files may leave rows the worker is still
-- checking
CREATE FUNCTION wait_for_sr_rows() RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. 300 LOOP
		IF NOT EXISTS (SELECT 1 FROM billogram_requests
						WHERE billogram_id LIKE 'sr%' AND state IN ('pending', 'sending')) THEN
			RETURN 'rows sent';
		END IF;
		PERFORM pg_sleep(0.1);
	END LOOP;
	RETURN 'still busy after 30 s';
END
$$;

-- A float amount column is refused when the trigger fires, before anything
-- is queued.  With extra_float_digits = -14 a float4 of 150 prints as 2e+02:
-- read through its text it was paid as 200.
SET extra_float_digits = -14;
SELECT 150::float4 AS float4_150_as_text;
CREATE TABLE sr_float (id int PRIMARY KEY, invoice text, amt float4 CHECK (amt <= 150));
CREATE TRIGGER pay AFTER INSERT ON sr_float FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
INSERT INTO sr_float VALUES (1, 'srfloat1', 150);
\echo :LAST_ERROR_SQLSTATE
-- so is a NULL float (the column, not the value, is wrong), float8, a
-- domain over a float, money and text
INSERT INTO sr_float VALUES (2, 'srfloat2', NULL);
\echo :LAST_ERROR_SQLSTATE
CREATE DOMAIN sr_amount_f AS float8 CHECK (VALUE > 0);
CREATE TABLE sr_others (id int PRIMARY KEY, invoice text,
    f8 float8, fd sr_amount_f, m money, t text);
CREATE TRIGGER pay_f8 AFTER INSERT ON sr_others FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'f8');
INSERT INTO sr_others (id, invoice, f8) VALUES (1, 'srfloat3', 150);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER pay_f8 ON sr_others;
CREATE TRIGGER pay_fd AFTER INSERT ON sr_others FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'fd');
INSERT INTO sr_others (id, invoice, fd) VALUES (1, 'srfloat4', 150);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER pay_fd ON sr_others;
CREATE TRIGGER pay_m AFTER INSERT ON sr_others FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'm');
INSERT INTO sr_others (id, invoice, m) VALUES (1, 'srmoney1', 150);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER pay_m ON sr_others;
CREATE TRIGGER pay_t AFTER INSERT ON sr_others FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 't');
INSERT INTO sr_others (id, invoice, t) VALUES (1, 'srtext1', '150');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER pay_t ON sr_others;
SELECT (SELECT count(*) FROM sr_float) + (SELECT count(*) FROM sr_others) AS rows_inserted;
SELECT count(*) AS refused_types_journaled FROM billogram_requests
 WHERE billogram_id IN ('srfloat1', 'srfloat2', 'srfloat3', 'srfloat4', 'srmoney1', 'srtext1');

-- integer and numeric columns (and domains over them) are read by cast
CREATE DOMAIN sr_cents AS numeric(12, 2);
CREATE TABLE sr_exact (id int PRIMARY KEY, invoice text,
    i2 int2, i4 int4, i8 int8, n sr_cents);
CREATE TRIGGER pay_i2 AFTER INSERT ON sr_exact FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'i2');
INSERT INTO sr_exact (id, invoice, i2) VALUES (1, 'srint2', 150);
DROP TRIGGER pay_i2 ON sr_exact;
CREATE TRIGGER pay_i4 AFTER INSERT ON sr_exact FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'i4');
INSERT INTO sr_exact (id, invoice, i4) VALUES (2, 'srint4', 150);
DROP TRIGGER pay_i4 ON sr_exact;
CREATE TRIGGER pay_i8 AFTER INSERT ON sr_exact FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'i8');
INSERT INTO sr_exact (id, invoice, i8) VALUES (3, 'srint8', 150);
-- an integer that is not a valid amount is still refused (22023)
INSERT INTO sr_exact (id, invoice, i8) VALUES (4, 'srint8neg', -150);
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER pay_i8 ON sr_exact;
CREATE TRIGGER pay_n AFTER INSERT ON sr_exact FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'n');
INSERT INTO sr_exact (id, invoice, n) VALUES (5, 'srnum1', 149.90);
DROP TRIGGER pay_n ON sr_exact;
RESET extra_float_digits;
SELECT wait_for_sr_rows();
SELECT billogram_id, amount, request_body, state
  FROM billogram_requests WHERE billogram_id LIKE 'srint%' OR billogram_id = 'srnum1'
 ORDER BY id;
SELECT mock_request_count('srint4') AS srint4_posts,
       (SELECT r->'body' FROM mock_requests('srint4') r WHERE r->>'method' = 'POST') AS srint4_body;

-- a table without a primary key is refused: nothing could tell a row
-- inserted again from a new one
CREATE TABLE sr_nokey (invoice text, amt numeric);
CREATE TRIGGER pay AFTER INSERT ON sr_nokey FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
INSERT INTO sr_nokey VALUES ('srnokey1', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS nokey_queued FROM billogram_requests WHERE billogram_id = 'srnokey1';

-- nor is a key that two rows may hold when the trigger fires: a DEFERRABLE
-- one is checked at commit, and the second row's payment would be taken
-- for a repeat of the first's
CREATE TABLE sr_deferred (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED,
    invoice text, amt numeric);
CREATE TRIGGER pay AFTER INSERT ON sr_deferred FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
INSERT INTO sr_deferred VALUES (1, 'srdefer1', 5);
\echo :LAST_ERROR_SQLSTATE
-- a partitioned table's key that is not valid (added with ALTER TABLE
-- ONLY, the partition's index not attached) is not enforced in that
-- partition; once it is attached, the key is valid and the row pays
CREATE TABLE sr_unattached (id int NOT NULL, invoice text, amt numeric)
    PARTITION BY RANGE (id);
CREATE TABLE sr_unattached_low PARTITION OF sr_unattached FOR VALUES FROM (0) TO (100);
ALTER TABLE ONLY sr_unattached ADD PRIMARY KEY (id);
CREATE TRIGGER pay AFTER INSERT ON sr_unattached FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
INSERT INTO sr_unattached VALUES (1, 'srinvalid1', 5);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE sr_unattached_low ADD PRIMARY KEY (id);
ALTER INDEX sr_unattached_pkey ATTACH PARTITION sr_unattached_low_pkey;
INSERT INTO sr_unattached VALUES (1, 'srinvalid1', 5);
SELECT billogram_id, count(*) AS queued FROM billogram_requests
 WHERE billogram_id IN ('srdefer1', 'srinvalid1') GROUP BY billogram_id;

-- The key is written the same way in every session: a timestamptz key
-- inserted again under another TimeZone and DateStyle queues nothing.
CREATE TABLE sr_at (at timestamptz PRIMARY KEY, invoice text, amt numeric);
CREATE TRIGGER pay AFTER INSERT ON sr_at FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
SET TimeZone = 'Europe/Stockholm';
INSERT INTO sr_at VALUES ('2026-03-01 12:00:00+01', 'srat1', 7);
DELETE FROM sr_at;
SET TimeZone = 'America/New_York';
SET DateStyle = 'SQL, DMY';
SET client_min_messages = warning;
INSERT INTO sr_at VALUES ('2026-03-01 06:00:00-05', 'srat1', 7);
RESET client_min_messages;
RESET DateStyle;
RESET TimeZone;
SELECT count(*) AS srat1_rows, min(source_table) AS source_table, min(source_key::text) AS source_key
  FROM billogram_requests WHERE billogram_id = 'srat1';
SELECT kind, key FROM billogram_keys
 WHERE request_id = (SELECT id FROM billogram_requests WHERE billogram_id = 'srat1');
SELECT count(*) AS rows_in_table FROM sr_at;

-- the root of a partition tree: its owner must hold the grant as well as
-- the partition's (issue 20)
CREATE ROLE regress_sr_owner;
CREATE ROLE regress_sr_nogrant;
GRANT EXECUTE ON FUNCTION billogram_payment_trigger() TO regress_sr_owner;
CREATE TABLE sr_parted (id int, region text, invoice text, amt numeric,
    PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE sr_parted_se PARTITION OF sr_parted FOR VALUES IN ('se');
CREATE TRIGGER pay AFTER INSERT ON sr_parted FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
ALTER TABLE sr_parted OWNER TO regress_sr_nogrant;
ALTER TABLE sr_parted_se OWNER TO regress_sr_owner;
INSERT INTO sr_parted VALUES (1, 'se', 'srroot1', 3);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO sr_parted_se VALUES (1, 'se', 'srroot1', 3);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS root_without_grant_queued FROM billogram_requests WHERE billogram_id = 'srroot1';
ALTER TABLE sr_parted OWNER TO regress_sr_owner;
INSERT INTO sr_parted_se VALUES (1, 'se', 'srroot1', 3);
SELECT source_table, source_key FROM billogram_requests WHERE billogram_id = 'srroot1';

-- every table between the partition and the root counts too: a middle
-- level given to a role without the grant stops payments (issue 20)
CREATE TABLE sr_tree (id int, region text, city text, invoice text, amt numeric,
    PRIMARY KEY (id, region, city)) PARTITION BY LIST (region);
CREATE TABLE sr_tree_se PARTITION OF sr_tree FOR VALUES IN ('se') PARTITION BY LIST (city);
CREATE TABLE sr_tree_se_sto PARTITION OF sr_tree_se FOR VALUES IN ('sto');
CREATE TRIGGER pay AFTER INSERT ON sr_tree FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
ALTER TABLE sr_tree OWNER TO regress_sr_owner;
ALTER TABLE sr_tree_se OWNER TO regress_sr_nogrant;
ALTER TABLE sr_tree_se_sto OWNER TO regress_sr_owner;
SET ROLE regress_sr_owner;
INSERT INTO sr_tree VALUES (1, 'se', 'sto', 'srmid1', 3);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS middle_without_grant_queued FROM billogram_requests WHERE billogram_id = 'srmid1';

-- a deferrable trigger could fire at COMMIT, as whatever role is current
-- then, and the journal would name it instead of the role that inserted:
-- refused, whether deferred or not, and nothing is queued (issue 20)
CREATE TABLE sr_late (id int PRIMARY KEY, invoice text, amt numeric);
ALTER TABLE sr_late OWNER TO regress_sr_owner;
SET ROLE regress_sr_owner;
CREATE CONSTRAINT TRIGGER pay AFTER INSERT ON sr_late
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
BEGIN;
INSERT INTO sr_late VALUES (1, 'srlate1', 3);
RESET ROLE;
COMMIT;
\echo :LAST_ERROR_SQLSTATE
SET ROLE regress_sr_owner;
DROP TRIGGER pay ON sr_late;
CREATE CONSTRAINT TRIGGER pay AFTER INSERT ON sr_late
    DEFERRABLE INITIALLY IMMEDIATE FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
INSERT INTO sr_late VALUES (2, 'srlate2', 3);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT count(*) AS deferrable_queued FROM billogram_requests WHERE billogram_id LIKE 'srlate%';
-- a constraint trigger that is not deferrable fires in the statement: it
-- pays, and the journal names the role that inserted
SET ROLE regress_sr_owner;
DROP TRIGGER pay ON sr_late;
CREATE CONSTRAINT TRIGGER pay AFTER INSERT ON sr_late
    NOT DEFERRABLE FOR EACH ROW
    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amt');
INSERT INTO sr_late VALUES (3, 'srlate3', 3);
RESET ROLE;
SELECT billogram_id, created_by FROM billogram_requests WHERE billogram_id LIKE 'srlate%';
SELECT wait_for_sr_rows();

DROP TABLE sr_float, sr_others, sr_exact, sr_nokey, sr_deferred, sr_unattached, sr_at,
    sr_parted, sr_tree, sr_late;
DROP DOMAIN sr_amount_f, sr_cents;
DROP FUNCTION wait_for_sr_rows();
REVOKE ALL ON FUNCTION billogram_payment_trigger() FROM regress_sr_owner;
DROP ROLE regress_sr_owner, regress_sr_nogrant;
