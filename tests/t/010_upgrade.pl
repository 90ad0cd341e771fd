# The upgrade from 0.1 to the current version (through every script in
# between): a journal with rows in every state, created by 0.1's script in
# public; the current library serves nothing until ALTER EXTENSION UPDATE;
# then the extension in its own schema, every behaviour of the current
# version on those rows, the same schema as a fresh install, an update
# refused while schema billogram is not a superuser's alone, and a pg_dump
# and restore of the updated database.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

# the version this library speaks: the control file's default_version
open(my $control, '<', "$FindBin::Bin/../../billogram.control") or die "billogram.control: $!";
my ($current) = map { /^default_version\s*=\s*'([^']+)'/ ? $1 : () } <$control>;
close($control);
die 'no default_version in billogram.control' unless $current;
(my $current_re = $current) =~ s/\./\\./g;
note("current version: $current");

# the schema and privileges pg_dump writes for database $db
sub schema_dump
{
	my ($node, $db) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_dump', '--schema-only', '-d', $node->connstr($db) ], '>', \$out, '2>', \$err)
	  or die "pg_dump of $db: $err";
	return $out;
}

my $mock = BgTest->start_mock;
my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', $mock->config);
$node->start;
$node->safe_psql('postgres', "CREATE EXTENSION billogram VERSION '0.1'");
BgTest::worker_pid($node);

# 0.1's journal, with a row in every state as 0.1 left them
$node->safe_psql('postgres', q{
	INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body, state, finished_at, created_by)
	VALUES ('enqueue', 'upPending1', 'amount', 2.50, '{"mode":"amount","amount":2.50}', 'pending', NULL, 'alice'),
	       ('trigger', 'upPending2', 'remaining', NULL, '{"mode":"remaining"}', 'pending', NULL, 'alice'),
	       ('enqueue', 'upSending1', 'amount', 3, '{"mode":"amount","amount":3}', 'sending', NULL, 'bob'),
	       ('sync', 'upDone1', 'amount', 4, '{"mode":"amount","amount":4}', 'done', now() - interval '2 days', 'bob'),
	       ('enqueue', 'upFailed1', 'amount', 5, '{"mode":"amount","amount":5}', 'failed', now() - interval '2 days', 'carol'),
	       ('enqueue', 'upDoubt1', 'amount', 6, '{"mode":"amount","amount":6}', 'in_doubt', now() - interval '2 days', 'carol');
	UPDATE billogram_requests SET response = '{"id": "upDone1", "customer": {"name": "Anna"}}' WHERE billogram_id = 'upDone1';
	CREATE TABLE payouts (id serial PRIMARY KEY, invoice text, amount numeric);
	CREATE TRIGGER pay AFTER INSERT ON payouts FOR EACH ROW
	    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount');
	CREATE ROLE clerk;
	GRANT EXECUTE ON FUNCTION billogram_purge(interval) TO clerk;
	GRANT SELECT ON billogram_queue_status TO clerk;
	CREATE ROLE payer;
	GRANT EXECUTE ON FUNCTION billogram_credit_payment(text, text, numeric) TO payer WITH GRANT OPTION;
	GRANT EXECUTE ON FUNCTION billogram_enqueue_credit_payment(text, text, numeric) TO clerk;
});
is($node->safe_psql('postgres',
	"SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'billogram'"),
	'public', '0.1 is in public, where CREATE EXTENSION put it');
# default privileges of the superuser who will run the update: what the
# update makes must not inherit them (issue 20, route 3)
$node->safe_psql('postgres', q{
	ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO clerk;
	ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO clerk;
	ALTER DEFAULT PRIVILEGES GRANT ALL ON SEQUENCES TO clerk;
});

# The library is newer: with the database at 0.1 it sends nothing and says why.
my ($state, $out, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('upSync0', 'amount', 1)");
is($state, '55000', 'a synchronous call before the update is refused');
like($err, qr/not at version $current_re/, "saying the extension is not at $current");
like($err, qr/ALTER EXTENSION billogram UPDATE/, 'with the command that fixes it');
($state, $out, $err) = BgTest::call($node,
	"SELECT billogram_enqueue_credit_payment('upQueue0', 'amount', 1)");
is($state, '55000', 'queuing before the update is refused');
ok($node->wait_for_log(qr/is at version 0\.1, this library needs $current_re/),
	'the worker logs that it waits for the update');
is(scalar @{ $mock->requests }, 0, 'nothing was sent before the update');

my $update_err = '';
my $rc = $node->psql('postgres', 'ALTER EXTENSION billogram UPDATE', stderr => \$update_err);
is($rc, 0, 'ALTER EXTENSION billogram UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'billogram'"),
	$current, "updated to $current");
# 0.1 recorded no origin, so the update cannot tell this database from a
# copy restored elsewhere (a staging server restored from production's
# dump): what 0.1 left pending is held, not sent, and the update says so.
like($update_err, qr/WARNING:  billogram: 2 pending payment\(s\) inherited from billogram 0\.1 or from another database or cluster are held, not sent/,
	'the update says how many inherited payments it holds');
like($update_err, qr/billogram_release_held\(\)/, 'and which call releases them');

# the functions that gained an idempotency key were made again, with the
# grants their predecessors had, and no others
is($node->safe_psql('postgres', q{
	SELECT string_agg(pg_get_userbyid(a.grantee) || ':' || p.proname || ':' || a.is_grantable, ','
	                  ORDER BY pg_get_userbyid(a.grantee))
	  FROM pg_proc p, aclexplode(p.proacl) a
	 WHERE p.proname IN ('billogram_credit_payment', 'billogram_enqueue_credit_payment')
	   AND a.grantee <> p.proowner AND p.pronargs = 4}),
	'clerk:billogram_enqueue_credit_payment:false,payer:billogram_credit_payment:true',
	'EXECUTE on the payment functions is granted as before the update');
# and a dump says so: given back by the update, they must not count as the
# extension's initial privileges, which pg_dump leaves out; so is the grant
# on billogram_queue_status, a view the update makes again
my $dumped = schema_dump($node, 'postgres');
like($dumped,
	qr/^GRANT ALL ON FUNCTION billogram\.billogram_credit_payment\([^)]*\) TO payer WITH GRANT OPTION;\n.*^GRANT ALL ON FUNCTION billogram\.billogram_enqueue_credit_payment\([^)]*\) TO clerk;$/ms,
	'pg_dump keeps the grants the update gave back');
like($dumped, qr/^GRANT SELECT ON TABLE billogram\.billogram_queue_status TO clerk;$/m,
	'and the grant on the view the update made again');

# Everything moved into schema billogram, a superuser's, which the update
# made and which is not a member of the extension (as CREATE EXTENSION
# makes it); nothing of the extension is left in public.
is($node->safe_psql('postgres', q{
	SELECT e.extnamespace::regnamespace || ' ' || r.rolsuper || ' ' || e.extrelocatable || ' '
	       || (SELECT count(*) FROM pg_depend d
	            WHERE d.classid = 'pg_namespace'::regclass AND d.objid = e.extnamespace AND d.deptype = 'e')
	  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace JOIN pg_roles r ON r.oid = n.nspowner
	 WHERE e.extname = 'billogram'}),
	'billogram true false 0', 'the update moved the extension into schema billogram, a superuser\'s');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_depend d
	  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
	  LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
	 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram') AND d.deptype = 'e'
	   AND coalesce(c.relnamespace, p.pronamespace) <> 'billogram'::regnamespace}),
	'0', 'every member with it');
# the default privileges gave clerk nothing on what the update made; the
# grants made before the update stay
is($node->safe_psql('postgres', q{
	SELECT string_agg(o.name || ':' || a.privilege_type, ',' ORDER BY o.name, a.privilege_type)
	  FROM (SELECT c.relname::text AS name, c.relacl AS acl FROM pg_class c
	         WHERE c.relnamespace = 'billogram'::regnamespace
	        UNION ALL
	        SELECT p.proname::text, p.proacl FROM pg_proc p
	         WHERE p.pronamespace = 'billogram'::regnamespace) o, aclexplode(o.acl) a
	 WHERE a.grantee = 'clerk'::regrole}),
	'billogram_enqueue_credit_payment:EXECUTE,billogram_purge:EXECUTE,billogram_queue_status:SELECT',
	'default privileges granted nothing on what the update made; earlier grants stay');

# The worker takes the journal up within its sweep interval: the row left
# in 'sending' becomes in_doubt; the held rows wait.
$node->poll_query_until('postgres',
	"SELECT state = 'in_doubt' FROM billogram_requests WHERE billogram_id = 'upSending1'")
  or die 'the row in sending was not taken up';
is($node->safe_psql('postgres',
	"SELECT string_agg(billogram_id || '=' || state, ',' ORDER BY id) FROM billogram_requests"),
	'upPending1=held,upPending2=held,upSending1=in_doubt,upDone1=done,upFailed1=failed,upDoubt1=in_doubt',
	'every row is where the update puts it');
like($node->safe_psql('postgres', "SELECT resolution FROM billogram_requests WHERE billogram_id = 'upPending1'"),
	qr/^held by the update to 0\.3 at .*: inherited, not recorded as made in this database \(made in system unknown database unknown\)$/,
	'with the reason');
is(scalar @{ $mock->posts }, 0, 'nothing inherited was sent');
# 0.1 left a row in_doubt that nothing reads again: the update gives it a
# verdict of its own and advice naming the calls to make, not "read again
# at" a time that never comes
is($node->safe_psql('postgres',
	"SELECT verdict || ' ' || (next_check_at IS NULL) FROM billogram_in_doubt WHERE billogram_id = 'upDoubt1'"),
	'inherited true', 'an in_doubt row inherited from 0.1 has the verdict inherited');
my $doubt_id = $node->safe_psql('postgres', "SELECT id FROM billogram_requests WHERE billogram_id = 'upDoubt1'");
like($node->safe_psql('postgres', "SELECT advice FROM billogram_in_doubt WHERE billogram_id = 'upDoubt1'"),
	qr/^not checked: it was left in_doubt by an earlier version of billogram, .*billogram_resolve\($doubt_id, 'mark_done'\) or billogram_resolve\($doubt_id, 'mark_failed'\)$/,
	'and advice that names the calls to make');

# The operator checked: release.  Each is sent once.
is($node->safe_psql('postgres', 'SELECT billogram_release_held()'), '2', 'released');
ok(BgTest::wait_settled($node, 60), 'the released rows are sent');
is_deeply($mock->post_counts(qr/^up/), { upPending1 => 1, upPending2 => 1 },
	'the pending rows were sent once each, nothing else was');
$node->poll_query_until('postgres',
	"SELECT invoice_snapshot IS NOT NULL FROM billogram_requests WHERE billogram_id = 'upSending1'")
  or die 'no snapshot';
ok(1, 'the row found in sending got its invoice snapshot');
is($node->safe_psql('postgres',
	"SELECT created_by || ' ' || coalesce(effective_role::text, '-') FROM billogram_requests WHERE billogram_id = 'upPending1'"),
	'alice -', "0.1's rows keep created_by; the new columns are empty");

# the current behaviour on 0.1's rows and objects
($state) = BgTest::call($node, "INSERT INTO payouts (invoice, amount) VALUES ('upNull1', NULL)");
is($state, '22023', "0.1's trigger refuses a NULL amount after the update");
is($node->safe_psql('postgres', "SELECT has_function_privilege('public', 'billogram_payment_trigger()', 'EXECUTE')"),
	'f', 'PUBLIC lost EXECUTE on the trigger function');
is($node->safe_psql('postgres', q{
	SELECT (billogram_resolve(id, 'mark_done')).state FROM billogram_requests WHERE billogram_id = 'upDoubt1'}),
	'done', "an in_doubt row from 0.1 is resolved");
is($node->safe_psql('postgres', q{
	SELECT (billogram_resolve(id, 'resend')).state FROM billogram_requests WHERE billogram_id = 'upFailed1'}),
	'pending', "a failed row from 0.1 can be sent again");
# it is still inherited (made nowhere known): held until released
ok($node->poll_query_until('postgres',
	"SELECT state = 'held' FROM billogram_requests WHERE billogram_id = 'upFailed1'"),
	'the worker holds it, as it holds every row not known to be made here');
is($node->safe_psql('postgres',
	"SELECT billogram_release_held(id) FROM billogram_requests WHERE billogram_id = 'upFailed1'"),
	'1', 'released');
ok(BgTest::wait_settled($node, 60), 'and it is sent');
is(scalar @{ $mock->posts('upFailed1') }, 1, 'once');
($state, $out) = BgTest::call($node, q{
	SET ROLE clerk;
	SELECT billogram_purge('1 day')});
is($out, '1', "purge, granted under 0.1, now removes old finished rows of every kind");
is($node->safe_psql('postgres', "SELECT count(*) FROM billogram_requests WHERE billogram_id = 'upDone1'"),
	'0', 'the old done row with personal data is gone');
($state, $out) = BgTest::call($node, q{
	SELECT billogram_credit_payment('upSync1', 'amount', 1) ->> 'id'});
is($out, 'upSync1', 'synchronous calls work after the update');

# The upgraded schema is the one a fresh install makes.
my $describe = q{
	SELECT string_agg(x, E'\n' ORDER BY x) FROM (
	  SELECT format('column %s.%s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
	                a.attnotnull, pg_get_expr(d.adbin, d.adrelid)) AS x
	    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	   WHERE c.relname IN ('billogram_requests', 'billogram_queue_status', 'billogram_events', 'billogram_health', 'billogram_metrics')
	     AND a.attnum > 0 AND NOT a.attisdropped
	  UNION ALL
	  SELECT format('constraint %s', pg_get_constraintdef(oid)) FROM pg_constraint
	   WHERE conrelid IN ('billogram_requests'::regclass, 'billogram_events'::regclass)
	  UNION ALL
	  SELECT format('domain %s %s %s', t.typname, format_type(t.typbasetype, t.typtypmod), pg_get_constraintdef(c.oid))
	    FROM pg_type t JOIN pg_constraint c ON c.contypid = t.oid
	   WHERE t.typnamespace = 'billogram'::regnamespace
	  UNION ALL
	  SELECT format('index %s', pg_get_indexdef(indexrelid)) FROM pg_index
	   WHERE indrelid IN ('billogram_requests'::regclass, 'billogram_events'::regclass)
	  UNION ALL
	  SELECT format('acl %s %s', relname, relacl) FROM pg_class
	   WHERE relname LIKE 'billogram%' AND relkind IN ('r', 'v', 'S')
	  UNION ALL
	  SELECT format('function %s %s %s %s %s %s', p.oid::regprocedure, p.prosecdef, p.proconfig,
	                p.provolatile, p.proacl, md5(p.prosrc))
	    FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
	   WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram')
	  UNION ALL
	  SELECT format('trigger %s', pg_get_triggerdef(t.oid)) FROM pg_trigger t
	    JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relname LIKE 'billogram%'
	  UNION ALL
	  SELECT format('view %s', pg_get_viewdef('billogram_queue_status'::regclass))
	  UNION ALL
	  SELECT format('view %s', pg_get_viewdef('billogram_in_doubt'::regclass))
	  UNION ALL
	  SELECT format('compression %s %s', attname, attcompression) FROM pg_attribute
	   WHERE attrelid = 'billogram_requests'::regclass AND attnum > 0
	  UNION ALL
	  SELECT format('initial privileges %s %s', pg_describe_object(i.classoid, i.objoid, i.objsubid), i.initprivs)
	    FROM pg_init_privs i JOIN pg_depend d ON d.classid = i.classoid AND d.objid = i.objoid
	   WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'billogram') AND d.deptype = 'e'
	) s};
$node->safe_psql('postgres', 'REVOKE ALL ON FUNCTION billogram_purge(interval) FROM clerk');
$node->safe_psql('postgres', 'REVOKE ALL ON billogram_queue_status FROM clerk');
$node->safe_psql('postgres', q{
	ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM clerk;
	ALTER DEFAULT PRIVILEGES REVOKE ALL ON TABLES FROM clerk;
	ALTER DEFAULT PRIVILEGES REVOKE ALL ON SEQUENCES FROM clerk;
});
$node->safe_psql('postgres', q{
	REVOKE ALL ON FUNCTION billogram_credit_payment(text, text, numeric, text) FROM payer CASCADE;
	REVOKE ALL ON FUNCTION billogram_enqueue_credit_payment(text, text, numeric, text) FROM clerk;
});
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION billogram');
my $upgraded = $node->safe_psql('postgres', $describe);
my $fresh = $node->safe_psql('fresh', $describe);
ok(length($fresh) > 1000, 'the schema description is not empty');
is($upgraded, $fresh, "the schema updated from 0.1 is identical to a fresh $current");


# An update that would move the extension into a schema billogram that is
# not a superuser's alone is refused, saying what to do, and leaves 0.2 as
# it was; done as it says, the update moves it.
$node->safe_psql('postgres', q{
	CREATE DATABASE squat;
	CREATE ROLE squatter;
});
$node->safe_psql('squat', q{
	CREATE EXTENSION billogram VERSION '0.2';
	GRANT SELECT ON billogram_health TO squatter;
	GRANT SELECT ON billogram_in_doubt TO squatter;
	CREATE SCHEMA billogram AUTHORIZATION squatter;
});
$update_err = '';
$rc = $node->psql('squat', 'ALTER EXTENSION billogram UPDATE', stderr => \$update_err);
isnt($rc, 0, 'the update into a schema billogram owned by another role is refused');
like($update_err, qr/ERROR:  schema billogram cannot hold the billogram extension: it is owned by squatter, who is not a superuser/,
	'saying whose it is');
like($update_err, qr/HINT:  As a superuser: ALTER SCHEMA billogram OWNER TO a superuser/, 'and what to do');
is($node->safe_psql('squat',
	"SELECT extversion || ' ' || extnamespace::regnamespace FROM pg_extension WHERE extname = 'billogram'"),
	'0.2 public', 'the extension is left at 0.2, in public');
$node->safe_psql('squat', 'ALTER SCHEMA billogram OWNER TO CURRENT_USER');
$node->safe_psql('squat', 'ALTER EXTENSION billogram UPDATE');
is($node->safe_psql('squat',
	"SELECT extversion || ' ' || extnamespace::regnamespace FROM pg_extension WHERE extname = 'billogram'"),
	"$current billogram", 'done as the hint says, the update moves it');
# billogram_health and billogram_in_doubt, made again by the update, keep
# what 0.2 had granted on them, and a dump has the grants
like(schema_dump($node, 'squat'),
	qr/^GRANT SELECT ON TABLE billogram\.billogram_health TO squatter;\n.*^GRANT SELECT ON TABLE billogram\.billogram_in_doubt TO squatter;$/ms,
	'the views made again keep their grants, in a dump too');

# pg_dump and restore of the updated database: the rows come back, at the
# current version.
my $dump = $node->basedir . '/upgraded.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], 'pg_restore');
is($node->safe_psql('restored', "SELECT extversion FROM pg_extension WHERE extname = 'billogram'"),
	$current, "restored at $current");
is($node->safe_psql('restored',
	'SELECT string_agg(billogram_id || state, \',\' ORDER BY id) FROM billogram_requests'),
	$node->safe_psql('postgres',
	'SELECT string_agg(billogram_id || state, \',\' ORDER BY id) FROM billogram_requests'),
	'with the same journal rows');
is($node->safe_psql('restored', 'SELECT count(*) FROM billogram_requests WHERE effective_role IS NOT NULL'),
	$node->safe_psql('postgres', 'SELECT count(*) FROM billogram_requests WHERE effective_role IS NOT NULL'),
	'and their columns added by 0.2');

done_testing();
