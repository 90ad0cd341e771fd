# The extension's own schema and what the worker trusts (issue 20, routes 1
# to 4), each route tried by the role that found it, logged in as that role:
#   1. the database owner renames public and puts a journal of its own,
#      with a trigger that makes it superuser, where the worker looked, and
#      a billogram_verify_callback of its own where the callback function
#      looked;
#   2. the database owner drops public with CASCADE;
#   3. default privileges set before CREATE EXTENSION grant an application
#      role everything the script makes;
#   4. a trigger, rule or policy on the extension's tables, or a member of
#      the extension given to a non-superuser, runs inside the worker and
#      the SECURITY DEFINER functions as a superuser.
# Each ends in 42501 or a refusal, with nothing sent and nobody made
# superuser; a schema billogram that is not a superuser's alone is refused
# by CREATE EXTENSION.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = BgTest->start_mock;
my $node = $mock->new_node('own_schema');
BgTest::worker_pid($node);

# Run $sql in database $db logged in as $role: (sqlstate or '', out, err).
sub as_role
{
	my ($role, $db, $sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql($db, "\\set VERBOSITY verbose\n$sql",
		stdout => \$out, stderr => \$err, on_error_stop => 1,
		extra_params => [ '-U', $role ]);
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($state // '', $out, $err);
}

# The same as the superuser that made the cluster.
sub call_in
{
	my ($db, $sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql($db, "\\set VERBOSITY verbose\n$sql",
		stdout => \$out, stderr => \$err, on_error_stop => 1);
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($state // '', $out, $err);
}

sub is_superuser
{
	my ($role) = @_;
	return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = '$role'");
}

# Wait until the queued payment on $id is done: the worker has served the
# journal since whatever the test did before queuing it.
sub pay_queued
{
	my ($id) = @_;
	$node->safe_psql('postgres',
		"SELECT billogram.billogram_enqueue_credit_payment('$id', 'amount', 1)");
	return $node->poll_query_until('postgres',
		"SELECT state = 'done' FROM billogram.billogram_requests WHERE billogram_id = '$id'");
}

# The database the worker serves belongs to an ordinary role, as a
# database of its own would: it owns public (pg_database_owner).
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	ALTER DATABASE postgres OWNER TO mallory;
	CREATE ROLE endpoint LOGIN;
	GRANT EXECUTE ON FUNCTION billogram.billogram_record_callback(text, text, text) TO endpoint;
});
is($node->safe_psql('postgres',
	"SELECT n.nspname || ' ' || r.rolsuper FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace JOIN pg_roles r ON r.oid = n.nspowner WHERE e.extname = 'billogram'"),
	'billogram true', 'the extension is in schema billogram, which a superuser owns');

# ---------------------------------------------------------------------
# Route 1: a public of the database owner's own making.
# ---------------------------------------------------------------------
my ($state, $out, $err) = as_role('mallory', 'postgres', q{
	ALTER SCHEMA public RENAME TO public_old;
	CREATE SCHEMA public;
	CREATE TABLE public.calls (what text);
	CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.calls VALUES ('trigger as ' || current_user);
		IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
			ALTER ROLE mallory SUPERUSER;
		END IF;
		RETURN NEW;
	END $$;
	CREATE TABLE public.billogram_requests (
		id bigserial PRIMARY KEY, origin text, billogram_id text, mode text, amount numeric,
		request_body text, state text DEFAULT 'pending', attempts int DEFAULT 0,
		next_attempt_at timestamptz DEFAULT now(), verify_reason text,
		made_in_system bigint, made_in_database oid, made_in_instance uuid);
	INSERT INTO public.billogram_requests (origin, billogram_id, mode, amount, request_body)
	VALUES ('enqueue', 'fakePub777', 'amount', 777, '{"amount": 777}');
	CREATE TRIGGER escalate BEFORE UPDATE ON public.billogram_requests
		FOR EACH ROW EXECUTE FUNCTION public.escalate();
	CREATE FUNCTION public.billogram_verify_callback(text, text, text) RETURNS boolean
	LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.calls VALUES ('verify as ' || current_user);
		IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
			ALTER ROLE mallory SUPERUSER;
		END IF;
		RETURN true;
	END $$;
	SELECT 'made';
});
is($out, 'made', 'the database owner made its own public, journal, trigger and verify function');
($state) = as_role('mallory', 'postgres',
	'CREATE TABLE billogram.billogram_requests2 (id int)');
is($state, '42501', 'but may create nothing in schema billogram');
($state) = as_role('mallory', 'postgres', 'ALTER SCHEMA billogram RENAME TO billogram_old');
is($state, '42501', 'nor rename it');

ok(pay_queued('ownPay1'), 'the worker goes on serving its own journal');
is(scalar @{ $mock->requests('fakePub777') }, 0, 'and sent nothing of the fake journal');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.calls'), '0',
	'whose trigger never ran');

# the callback function names its verifier by schema: the fake one is not
# called, and a forged callback is refused (no sign key is set here)
($state) = as_role('endpoint', 'postgres',
	"SELECT billogram.billogram_record_callback('1', 'forged', '{\"callback_type\": \"BillogramEvent\", \"event\": {\"event_uuid\": \"forged1\"}}')");
isnt($state, '', 'a forged callback is refused');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.calls'), '0',
	'the database owner\'s billogram_verify_callback was not called');
is($node->safe_psql('postgres', 'SELECT count(*) FROM billogram.billogram_events'), '0',
	'nothing was recorded');
is(is_superuser('mallory'), 'f', 'the database owner did not become superuser');

# ---------------------------------------------------------------------
# Route 2: DROP SCHEMA public CASCADE by the database owner.
# ---------------------------------------------------------------------
($state, $out) = as_role('mallory', 'postgres', q{
	DROP SCHEMA public CASCADE;
	DROP SCHEMA public_old CASCADE;
	SELECT 'dropped'});
is($out, 'dropped', 'the database owner dropped both its publics');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_extension WHERE extname = 'billogram'"), '1',
	'the extension is still there');
is($node->safe_psql('postgres',
	"SELECT state FROM billogram.billogram_requests WHERE billogram_id = 'ownPay1'"), 'done',
	'with its journal');
($state) = as_role('mallory', 'postgres', 'DROP SCHEMA billogram CASCADE');
is($state, '42501', 'schema billogram is not the database owner\'s to drop');
$node->safe_psql('postgres', 'CREATE SCHEMA public');
ok(pay_queued('ownPay2'), 'payments go on');

# ---------------------------------------------------------------------
# Route 4: what runs inside the worker and the SECURITY DEFINER functions.
# A superuser's trigger on the journal, not made by the extension, added
# in the transaction that queues a payment: the worker refuses the
# journal, says why, and sends nothing until the trigger is gone.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.watch() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN RETURN NEW; END $$;
	BEGIN;
	SELECT billogram.billogram_enqueue_credit_payment('trigHeld1', 'amount', 1);
	CREATE TRIGGER watch AFTER UPDATE ON billogram.billogram_requests
		FOR EACH ROW EXECUTE FUNCTION public.watch();
	COMMIT;
});
ok($node->wait_for_log(qr/LOG:  billogram: refusing to serve the journal in database "postgres": trigger watch on billogram\.billogram_requests was not made by the extension/),
	'the worker logs that it refuses the journal, naming the trigger');
like($node->safe_psql('postgres', 'SELECT refusal FROM billogram.billogram_health'),
	qr/^trigger watch on billogram\.billogram_requests was not made by the extension$/,
	'billogram_health says why');
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram.billogram_credit_payment('trigSync1', 'amount', 1)");
is($state, '42501', 'a synchronous call is refused with 42501');
like($err, qr/refuses to serve the journal: trigger watch/, 'saying why');
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram.billogram_enqueue_credit_payment('trigQueue2', 'amount', 1)");
is($state, '42501', 'queuing is refused: the insert would run the trigger as the journal\'s owner');
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram.billogram_purge('1 day')");
is($state, '42501', 'a SECURITY DEFINER function refuses to run');
like($err, qr/refuses to run: trigger watch/, 'naming the trigger');
is($node->safe_psql('postgres',
	"SELECT state FROM billogram.billogram_requests WHERE billogram_id = 'trigHeld1'"), 'pending',
	'the queued payment waits');
is(scalar @{ $mock->requests('trigHeld1') } + scalar @{ $mock->requests('trigSync1') }, 0,
	'nothing was sent');

$node->safe_psql('postgres', 'DROP TRIGGER watch ON billogram.billogram_requests');
ok($node->poll_query_until('postgres',
	"SELECT state = 'done' FROM billogram.billogram_requests WHERE billogram_id = 'trigHeld1'"),
	'once the trigger is dropped, the worker sends the waiting payment');
is(scalar @{ $mock->posts('trigHeld1') }, 1, 'once');
ok($node->log_contains(qr/serving the journal in database "postgres" again/),
	'and logs that it serves the journal again');
is($node->safe_psql('postgres', 'SELECT refusal IS NULL FROM billogram.billogram_health'), 't',
	'billogram_health shows no refusal');

# a rule, a row-level policy, a member given to a non-superuser: each is
# refused the same way, by the worker and by the SECURITY DEFINER functions
my @cases = (
	[ 'CREATE RULE quiet AS ON DELETE TO billogram.billogram_requests DO INSTEAD NOTHING',
	  'DROP RULE quiet ON billogram.billogram_requests',
	  qr/rule quiet on billogram\.billogram_requests was not made by the extension/ ],
	[ 'CREATE POLICY peek ON billogram.billogram_events USING (true)',
	  'DROP POLICY peek ON billogram.billogram_events',
	  qr/policy peek on billogram\.billogram_events was not made by the extension/ ],
	[ 'ALTER FUNCTION billogram.billogram_announce(bigint, text) OWNER TO mallory',
	  'ALTER FUNCTION billogram.billogram_announce(bigint, text) OWNER TO CURRENT_USER',
	  qr/function billogram\.billogram_announce\(bigint,pg_catalog\.text\) belongs to mallory, who is not a superuser/ ],
	[ 'GRANT CREATE ON SCHEMA billogram TO PUBLIC',
	  'REVOKE CREATE ON SCHEMA billogram FROM PUBLIC',
	  qr/PUBLIC may create objects in schema billogram/ ],
);
my $n = 0;
for my $case (@cases)
{
	my ($add, $drop, $why) = @$case;
	$n++;
	$node->safe_psql('postgres', $add);
	ok($node->poll_query_until('postgres',
		'SELECT refusal IS NOT NULL FROM billogram.billogram_health'),
		"refused after: $add");
	like($node->safe_psql('postgres', 'SELECT refusal FROM billogram.billogram_health'),
		$why, 'billogram_health says why');
	($state, undef, $err) = BgTest::call($node,
		"SELECT billogram.billogram_credit_payment('ruleSync$n', 'amount', 1)");
	is($state, '42501', 'a synchronous call is refused');
	($state) = BgTest::call($node, "SELECT billogram.billogram_release_held()");
	is($state, '42501', 'and so is a SECURITY DEFINER function');
	is(scalar @{ $mock->requests("ruleSync$n") }, 0, 'nothing was sent');
	$node->safe_psql('postgres', $drop);
	ok(pay_queued("ruleAfter$n"), 'undone: payments flow again');
}
is(is_superuser('mallory'), 'f', 'nobody became superuser');

# ---------------------------------------------------------------------
# Route 3: default privileges set before CREATE EXTENSION, for every
# schema and in schema billogram, by the installing superuser.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE ROLE app_rw LOGIN;
	CREATE DATABASE defprivs;
});
$node->safe_psql('defprivs', q{
	CREATE SCHEMA billogram;
	ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO app_rw;
	ALTER DEFAULT PRIVILEGES GRANT ALL ON SEQUENCES TO app_rw;
	ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO app_rw WITH GRANT OPTION;
	ALTER DEFAULT PRIVILEGES IN SCHEMA billogram GRANT ALL ON TABLES TO app_rw;
	ALTER DEFAULT PRIVILEGES IN SCHEMA billogram GRANT EXECUTE ON FUNCTIONS TO app_rw;
	CREATE EXTENSION billogram;
});
# what any grantee but the owner holds on any member of the extension
my $grants = q{
	SELECT coalesce(string_agg(format('%s %s %s', o.what, a.privilege_type,
	                                  CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END),
	                           ', ' ORDER BY o.what COLLATE "C", a.privilege_type), 'none')
	  FROM (SELECT c.relname::text AS what, c.relacl AS acl, c.relowner AS owner
	          FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
	         WHERE d.deptype = 'e' AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram')
	        UNION ALL
	        SELECT p.proname::text, coalesce(p.proacl, acldefault('f', p.proowner)), p.proowner
	          FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
	         WHERE d.deptype = 'e' AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram')) o,
	       aclexplode(o.acl) a
	 WHERE a.grantee <> o.owner};
my $documented = 'billogram_health SELECT pg_monitor, billogram_invoice_summary EXECUTE PUBLIC, '
  . 'billogram_metric_values EXECUTE pg_monitor, billogram_metrics SELECT pg_monitor, '
  . 'billogram_weigh EXECUTE PUBLIC, billogram_worker_status EXECUTE pg_monitor';
is($node->safe_psql('defprivs', $grants), $documented,
	'after CREATE EXTENSION each object has exactly the documented grants, whatever default privileges said');
($state) = as_role('app_rw', 'defprivs',
	"SELECT billogram.billogram_credit_payment('defPriv1', 'amount', 1)");
is($state, '42501', 'the application role cannot pay');
($state) = as_role('app_rw', 'defprivs',
	"SELECT billogram.billogram_enqueue_credit_payment('defPriv1', 'amount', 1)");
is($state, '42501', 'nor queue');
($state) = as_role('app_rw', 'defprivs',
	"INSERT INTO billogram.billogram_requests (origin, billogram_id, mode, amount, request_body) VALUES ('enqueue', 'defPriv1', 'amount', 1, '{}')");
is($state, '42501', 'nor write the journal');
($state) = as_role('app_rw', 'defprivs', "SELECT billogram.billogram_settle(1, NULL, NULL, 1)");
is($state, '42501', 'nor call the worker\'s own functions');
is(scalar @{ $mock->requests('defPriv1') }, 0, 'nothing was sent');

# and a schema that others may create in is refused, wherever that grant
# came from: here the default privileges of schemas
$node->safe_psql('postgres', 'CREATE DATABASE defschema');
$node->safe_psql('defschema', 'ALTER DEFAULT PRIVILEGES GRANT CREATE ON SCHEMAS TO app_rw');
($state, undef, $err) = call_in('defschema', 'CREATE EXTENSION billogram');
is($state, '42501', 'CREATE EXTENSION refuses a schema app_rw may create in');
like($err, qr/schema billogram cannot hold the billogram extension: app_rw may create objects in it/,
	'saying who');
like($err, qr/HINT:.*ALTER DEFAULT PRIVILEGES/, 'with a hint that names default privileges');

# ---------------------------------------------------------------------
# A schema billogram that exists already and is not a superuser's alone.
# ---------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE ROLE squatter LOGIN;
	CREATE DATABASE squat;
	GRANT CREATE ON DATABASE squat TO squatter;
});
($state, $out) = as_role('squatter', 'squat', q{
	CREATE SCHEMA billogram;
	CREATE FUNCTION billogram.billogram_caller(text) RETURNS text LANGUAGE sql AS $$ SELECT 'me' $$;
	SELECT 'squatted'});
is($out, 'squatted', 'an ordinary role made a schema billogram, with a function in it');
($state, undef, $err) = call_in('squat', 'CREATE EXTENSION billogram');
is($state, '42501', 'CREATE EXTENSION refuses it');
like($err, qr/schema billogram cannot hold the billogram extension: it is owned by squatter, who is not a superuser/,
	'saying whose it is');
$node->safe_psql('squat', 'ALTER SCHEMA billogram OWNER TO CURRENT_USER');
($state, undef, $err) = call_in('squat', 'CREATE EXTENSION billogram');
is($state, '42501', 'given to a superuser, it is still refused while a non-superuser\'s function is in it');
like($err, qr/billogram_caller\(text\) \(squatter\) in it belong to roles that are not superusers/,
	'naming the function');
$node->safe_psql('squat', 'DROP FUNCTION billogram.billogram_caller(text)');
$node->safe_psql('squat', 'GRANT CREATE ON SCHEMA billogram TO squatter');
($state, undef, $err) = call_in('squat', 'CREATE EXTENSION billogram');
is($state, '42501', 'and while the role may create in it');
like($err, qr/squatter may create objects in it/, 'saying so');
$node->safe_psql('squat', 'REVOKE CREATE ON SCHEMA billogram FROM squatter');
$node->safe_psql('squat', 'CREATE EXTENSION billogram');
is($node->safe_psql('squat', "SELECT extversion IS NOT NULL FROM pg_extension WHERE extname = 'billogram'"),
	't', 'once it is a superuser\'s alone, the extension is created in it');
is(join(',', sort map { $_->{id} } @{ $mock->posts }),
	'ownPay1,ownPay2,ruleAfter1,ruleAfter2,ruleAfter3,ruleAfter4,trigHeld1',
	'the only payments ever sent were the test\'s own, once each');

$node->stop;
$mock->stop;
done_testing();
