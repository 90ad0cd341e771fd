# The transactional outbox: a payment reaches Billogram if and only if the
# inserting transaction commits, and never twice, through rollbacks,
# retries, API faults, a SIGKILLed worker and an immediate shutdown.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mock = BgTest->start_mock;
my $node = $mock->new_node('queue', extra => "billogram.retry_for = '1h'\n");
BgTest::worker_pid($node);
$node->safe_psql('postgres', q{
	CREATE TABLE payments (id bigserial PRIMARY KEY, invoice text NOT NULL, amount numeric(12, 2));
	CREATE TRIGGER register_payout AFTER INSERT ON payments FOR EACH ROW
		EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount');
});

sub states
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT state || '=' || count(*) FROM billogram_requests "
		  . "WHERE billogram_id LIKE '$prefix%' GROUP BY state ORDER BY state");
}

sub max_posts
{
	my ($pattern) = @_;
	my $counts = $mock->post_counts($pattern);
	my $max = 0;
	$max = $_ > $max ? $_ : $max for values %$counts;
	return ($max, scalar keys %$counts);
}

# --- rollback sends nothing; commit sends each row once ---
$node->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO payments (invoice, amount) SELECT 'rb' || g, 1 FROM generate_series(1, 10) g;
	ROLLBACK;
	INSERT INTO payments (invoice, amount) VALUES ('rbafter1', 1);
});
ok(BgTest::wait_settled($node), 'the committed row was processed');
is(states('rb'), 'done=1', 'only the committed row is in the journal, done');
my ($max, $ids) = max_posts(qr/^rb/);
is($ids, 1, 'nothing from the rolled-back transaction reached the mock');

# --- 1,000 rows committed in one transaction ---
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'bulk' || g, 1.25 FROM generate_series(1, 1000) g");
ok(BgTest::wait_settled($node), '1,000 queued payments processed');
is(states('bulk'), 'done=1000', 'all 1,000 are done');
($max, $ids) = max_posts(qr/^bulk/);
is($ids, 1000, 'the mock received all 1,000');
is($max, 1, 'each exactly once');

# --- a row that commits late sorts before the rows claimed meanwhile ---
# The worker claims onwards from the last row it claimed.  A row whose
# transaction started earlier but committed later has an earlier
# next_attempt_at; it must still be sent, once.
my ($late_in, $late_out) = ("BEGIN;\nINSERT INTO payments (invoice, amount) VALUES ('late1', 2);\n", '');
my $late = IPC::Run::start(
	[ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres') ],
	'<', \$late_in, '>', \$late_out, '2>', \$late_out);
my $late_started = 0;
for (1 .. 200)
{
	$late->pump_nb;
	$late_started = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'");
	last if $late_started;
	usleep(50_000);
}
die "the late transaction did not start: $late_out" unless $late_started;
# it commits while the worker is still sending the others
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'early' || g, 1 FROM generate_series(1, 300) g");
$late_in .= "COMMIT;\n";
$late->finish;
ok(BgTest::wait_settled($node), 'the rows committed first and the late one were processed');
is(states('early'), 'done=300', 'the others are done');
is(states('late1'), 'done=1', 'the late row is done');
is(scalar @{ $mock->posts('late1') }, 1, 'and was sent once');
is($node->safe_psql('postgres',
		"SELECT bool_and(a.created_at < b.created_at) FROM billogram_requests a, billogram_requests b "
		  . "WHERE a.billogram_id = 'late1' AND b.billogram_id LIKE 'early%'"),
	't', 'though it sorted before all of them in the queue');

# --- notifications on final states ---
my ($lout, $lerr) = ('', '');
my $listener = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'),
	  '-c', 'LISTEN billogram_requests', '-c', 'SELECT pg_sleep(4)' ],
	'>', \$lout, '2>', \$lerr);
sleep 1;
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) VALUES ('notify1', 1), ('nfnotify1', 1)");
$listener->finish;
like($lout, qr/Asynchronous notification "billogram_requests" with payload "\{"id" : \d+, "state" : "done"\}"/,
	'a NOTIFY on billogram_requests when a row is done');
like($lout, qr/payload "\{"id" : \d+, "state" : "failed"\}"/, 'and when one fails');

# --- 503, then success: retried after Retry-After ---
# (the invoice is read first, so that the 503 is the payment's)
$node->safe_psql('postgres', "SELECT billogram_get_invoice('retry503') IS NOT NULL");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM billogram_ledger WHERE billogram_id = 'retry503'")
  or die 'the reading did not reach the ledger';
$mock->fault('{"mode":"status","status":503,"retry_after":1,"count":1}');
$node->safe_psql('postgres', "INSERT INTO payments (invoice, amount) VALUES ('retry503', 7)");
ok(BgTest::wait_settled($node), 'the 503 row settled');
is( $node->safe_psql('postgres',
		"SELECT state || ' ' || attempts || ' ' || (finished_at - sent_at < '1 minute') FROM billogram_requests WHERE billogram_id = 'retry503'"),
	'done 2 true', 'a 503 is retried and then done, in two attempts');
is(scalar @{ $mock->posts('retry503') }, 2, 'two requests reached the mock');
is(scalar @{ $mock->invoice('retry503')->{payments} }, 1, 'and exactly one payment was applied');

# --- 404 fails, 500 is in doubt with a snapshot ---
$node->safe_psql('postgres', "INSERT INTO payments (invoice, amount) VALUES ('nfq1', 1), ('e500q1', 1)");
ok(BgTest::wait_settled($node), 'the 404 and 500 rows settled');
is($node->safe_psql('postgres', "SELECT state FROM billogram_requests WHERE billogram_id = 'nfq1'"),
	'failed', '404: failed');
is($node->safe_psql('postgres', "SELECT attempts FROM billogram_requests WHERE billogram_id = 'nfq1'"),
	'0', 'by the reading of its invoice before its first payment, and never sent');
is(scalar @{ $mock->posts('nfq1') }, 0, 'no payment reached the mock');
is($node->safe_psql('postgres', "SELECT state FROM billogram_requests WHERE billogram_id = 'e500q1'"),
	'in_doubt', '500: in_doubt');
ok( $node->poll_query_until('postgres',
		"SELECT invoice_snapshot->>'id' = 'e500q1' FROM billogram_requests WHERE billogram_id = 'e500q1'"),
	'with a snapshot of the invoice taken by GET');
is(scalar @{ $mock->posts('e500q1') }, 1, 'the 500 was not re-sent');

# --- the API down for a while, then back ---
$mock->fault('{"mode":"down"}');
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'down' || g, 2 FROM generate_series(1, 20) g");
sleep 3;
is( $node->safe_psql('postgres',
		"SELECT bool_and(state = 'pending' AND error->>'kind' = 'no_reply' "
		  . "AND NOT (error->>'may_have_reached_billogram')::bool) FROM billogram_requests WHERE billogram_id LIKE 'down%'"),
	't', 'while the API is down, rows wait as pending with the reason');
$mock->fault('{"mode":"none"}');
ok(BgTest::wait_settled($node), 'rows are sent when the API is back');
is(states('down'), 'done=20', 'all done');
($max, $ids) = max_posts(qr/^down/);
is("$ids $max", '20 1', 'each sent once');

# --- the worker SIGKILLed in the middle of a batch ---
# Killed while a payment is sending, once 20 are done.  The connections may
# all be reading invoices at the moment of the kill, with no row sending
# (the POST in flight when the check saw one may have ended meanwhile): the
# kill is then made again on the restarted worker, so that what follows
# always weighs rows that were caught.
$mock->fault('{"mode":"slow","ms":150}');
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'kill' || g, 3 FROM generate_series(1, 200) g");
my $caught = 0;
for my $try (1 .. 5)
{
	$node->poll_query_until('postgres',
		"SELECT count(*) FILTER (WHERE state = 'done') >= 20 AND bool_or(state = 'sending') "
		  . "FROM billogram_requests WHERE billogram_id LIKE 'kill%'")
	  or die;
	my $killed = BgTest::worker_pid($node);
	my $before = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
	kill 'KILL', $killed;
	BgTest::worker_pid($node, $killed);
	# left sending by the kill, or already found so by the new worker (a
	# row the new worker sends left after the kill)
	$caught = $node->safe_psql('postgres',
		"SELECT count(*) FROM billogram_requests WHERE billogram_id LIKE 'kill%' "
		  . "AND ((state = 'sending' AND sent_at < '$before') OR error->>'sqlstate' = 'BG002')");
	last if $caught > 0;
}
ok($caught > 0, "the kill caught payments sending ($caught)");
$mock->fault('{"mode":"none"}');
ok(BgTest::wait_settled($node), 'after the SIGKILL every row settles');
my $kill_states = states('kill');
like($kill_states, qr/^done=\d+(\nin_doubt=\d+)?$/, "rows end done or in_doubt ($kill_states)");
($max, $ids) = max_posts(qr/^kill/);
is($max, 1, 'no payment was sent twice');
# the rows the kill caught in 'sending' became in_doubt and were settled
# from the invoice: done ('reconciled') exactly when the payment arrived
ok( $node->poll_query_until('postgres',
		"SELECT bool_and(invoice_snapshot IS NOT NULL AND evidence->>'verdict' IN ('applied', 'checking')) "
		  . "FROM billogram_requests WHERE billogram_id LIKE 'kill%' AND error->>'sqlstate' = 'BG002'"),
	'every row caught sending got a snapshot and a verdict');
# A payment the mock applies after its delay may have been read before it
# showed ('checking'): the final state comes with a later reading.  Wait for
# it, for every caught row that reached the mock (nothing is sent any more,
# so that set is final); a row that never reached it stays in_doubt whatever
# its verdict.
my @reached = sort keys %{ $mock->post_counts(qr/^kill/) };
ok( $node->poll_query_until('postgres',
		"SELECT coalesce(bool_and(state = 'done'), true) FROM billogram_requests "
		  . "WHERE error->>'sqlstate' = 'BG002' AND billogram_id = ANY ('{"
		  . join(',', @reached) . "}')"),
	'the caught rows that reached the mock reach their final verdict');
my %caught = split /[|\n]/, $node->safe_psql('postgres',
	"SELECT billogram_id, state || ':' || coalesce(resolution ~ '^reconciled', false) "
	  . "FROM billogram_requests WHERE billogram_id LIKE 'kill%' AND error->>'sqlstate' = 'BG002'");
my %posted = map { $_ => 1 } keys %{ $mock->post_counts(qr/^kill/) };
is_deeply([ map { "$_=$caught{$_}" } sort keys %caught ],
	[ map { "$_=" . ($posted{$_} ? 'done:true' : 'in_doubt:false') } sort keys %caught ],
	'those that reached the mock are done, reconciled; the others stay in_doubt');

# --- pg_ctl stop -m immediate with 1,000 rows pending ---
$mock->fault('{"mode":"down"}');
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'imm' || g, 4 FROM generate_series(1, 1000) g");
$node->stop('immediate');
$mock->fault('{"mode":"none"}');
$node->start;
ok(BgTest::wait_settled($node, 180), 'after an immediate shutdown and restart every row settles');
my $imm = states('imm');
like($imm, qr/^done=\d+(\nin_doubt=\d+)?$/, "rows end done or in_doubt ($imm)");
($max, $ids) = max_posts(qr/^imm/);
is($max, 1, 'no payment was sent twice');
my ($done) = $imm =~ /done=(\d+)/;
is($ids, $done, 'exactly the done rows reached the mock (the API was down before the stop)');

# --- the journal is dumped with the data ---
my $dump = $node->safe_psql('postgres', 'SELECT 1') && do {
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_dump', '-d', $node->connstr('postgres') ], '>', \$out, '2>', \$err);
	$out;
};
like($dump, qr/COPY billogram\.billogram_requests .* FROM stdin;\n/, 'pg_dump dumps billogram_requests rows');
like($dump, qr/\tbulk1000\t/, 'including the queued payments');

# --- retries stop after billogram.retry_for, counted from queuing ---
# (last: the short window would fail the other tests' retries)
$node->append_conf('postgresql.conf', "billogram.retry_for = '3s'\n");
$node->reload;
sleep 1;
$node->safe_psql('postgres', "INSERT INTO payments (invoice, amount) VALUES ('e429max', 1)");
ok(BgTest::wait_settled($node), 'the always-429 row settled');
is( $node->safe_psql('postgres',
		"SELECT state || ' ' || (error->>'sqlstate') || ' ' || (error->>'retry_after') FROM billogram_requests WHERE billogram_id = 'e429max'"),
	'failed BG429 1', 'after retry_for a 429 row is failed, with the Retry-After it got');
is( $node->safe_psql('postgres',
		"SELECT attempts >= 2 AND finished_at - pending_since >= interval '3 s' FROM billogram_requests WHERE billogram_id = 'e429max'"),
	't', 'tried more than once, and failed only once it had been pending for retry_for');
is(scalar @{ $mock->posts('e429max') },
	$node->safe_psql('postgres', "SELECT attempts FROM billogram_requests WHERE billogram_id = 'e429max'"),
	'one POST per attempt');

$node->stop;
$mock->stop;
done_testing();
