# The worker survives what a database around it does for months: an ERROR
# in its own loop (here a superuser's constraint on the journal that fails
# some writes), a lock held on the journal, and it keeps the statistics flowing.
# Through all of it the worker keeps its pid, nothing is sent that was not
# journaled first, and nothing finished is lost.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mock = BgTest->start_mock;
my $node = $mock->new_node('errors', extra => "billogram.max_connections = 4\n");
my $pid = BgTest::worker_pid($node);

sub start_call
{
	my ($id) = @_;
	my %c = (out => '', err => '');
	$c{h} = IPC::Run::start(
		[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres'), '-c',
		  "SELECT billogram_credit_payment('$id', 'amount', 1) ->> 'id'" ],
		'>', \$c{out}, '2>', \$c{err});
	return \%c;
}

sub wait_for_request
{
	my ($id) = @_;
	for (1 .. 400)
	{
		return 1 if @{ $mock->requests($id) };
		usleep(25_000);
	}
	return 0;
}

sub state_of
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(state, ',') FROM billogram_requests WHERE billogram_id = '$id'");
}

# ---------------------------------------------------------------------
# Statistics: the journal's churn reaches pg_stat_user_tables while the
# worker runs, so autovacuum can see it.
# ---------------------------------------------------------------------
my $stats_sql = q{SELECT coalesce(n_tup_upd, 0) || ' ' || coalesce(n_dead_tup, 0)
	FROM pg_stat_user_tables WHERE relname = 'billogram_requests'};
my ($upd0) = split ' ', $node->safe_psql('postgres', $stats_sql);
$node->safe_psql('postgres',
	"SELECT billogram_enqueue_credit_payment('stat' || g, 'amount', 1) FROM generate_series(1, 50) g");
ok(BgTest::wait_settled($node), '50 queued payments were processed');
my $t0 = time;
# two updates a payment: claimed ('sending'), then its outcome
ok( $node->poll_query_until('postgres',
		"SELECT n_tup_upd >= $upd0 + 100 AND n_dead_tup >= 50 FROM pg_stat_user_tables WHERE relname = 'billogram_requests'"),
	'the worker\'s updates of the journal show in pg_stat_user_tables');
my $stats_delay = time - $t0;
cmp_ok($stats_delay, '<', 5, 'within seconds of the drain');
note(sprintf('statistics visible %.1f s after the drain settled: %s', $stats_delay,
	$node->safe_psql('postgres', $stats_sql)));
is(BgTest::worker_pid($node), $pid, 'with the worker still running');

# ---------------------------------------------------------------------
# An ERROR inside the loop.  The injected fault: a superuser's CHECK
# constraint that fails the journal writes for ids starting with "poison":
# the 'sending' row of a synchronous call, and any outcome (not the claim,
# nor the reading of an invoice before its first payment, which leave a
# queued row sending or pending).  Not a trigger: the worker refuses to
# serve a journal with a trigger on it (tests/t/023_own_schema.pl).
# ---------------------------------------------------------------------
$node->safe_psql('postgres', q{
	ALTER TABLE billogram_requests ADD CONSTRAINT inject_fault
		CHECK (billogram_id NOT LIKE 'poison%' OR (origin <> 'sync' AND state IN ('pending', 'sending')));
});

# two payments in flight when the error comes
my $c1 = start_call('slow1500inflight1');
my $c2 = start_call('slow1500inflight2');
ok(wait_for_request('slow1500inflight1') && wait_for_request('slow1500inflight2'),
	'two slow payments are in flight');

# a synchronous call whose 'sending' row cannot be written
my ($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('poisonsync1', 'amount', 1)");
is($state, 'BG003', 'the call whose journal row failed gets SQLSTATE BG003');
like($err, qr/the credit payment on poisonsync1 was not sent: the billogram worker could not record it in billogram_requests/,
	'and a message saying it was not sent');
like($err, qr/DETAIL:.*violates check constraint "inject_fault"/, 'the detail gives the error the worker met');
note("the caller saw:\n$err");

$c1->{h}->finish;
$c2->{h}->finish;
is($c1->{out}, "slow1500inflight1\n", 'the first payment in flight completed');
is($c2->{out}, "slow1500inflight2\n", 'the second payment in flight completed');
is(scalar @{ $mock->posts('poisonsync1') }, 0, 'the payment that was not journaled was not sent');
is(state_of('poisonsync1'), '', 'and it has no journal row');
ok(BgTest::wait_settled($node), 'the payments in flight are recorded');
is(state_of('slow1500inflight1') . ' ' . state_of('slow1500inflight2'), 'done done',
	'as done');
ok($node->log_contains(qr/ERROR:.*violates check constraint "inject_fault"/),
	'the server log has the error');

# a queued payment whose outcome cannot be written: it was sent once and
# stays 'sending' while the write is retried with backoff
$node->safe_psql('postgres',
	"SELECT billogram_enqueue_credit_payment('poisonq1', 'amount', 1)");
ok($node->wait_for_log(qr/the outcome of request \d+ is not recorded yet; next try in/),
	'the worker keeps the outcome it could not record and retries');
$node->safe_psql('postgres',
	"SELECT billogram_enqueue_credit_payment('okq' || g, 'amount', 1) FROM generate_series(1, 5) g");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 5 FROM billogram_requests WHERE billogram_id LIKE 'okq%' AND state = 'done'"),
	'other queued payments go through meanwhile');
my ($ok) = BgTest::call($node, "SELECT billogram_credit_payment('meanwhile1', 'amount', 1)");
is($ok, '', 'and so do synchronous calls');
is(state_of('poisonq1'), 'sending', 'the poisoned outcome is not written');
is(scalar @{ $mock->posts('poisonq1') }, 1, 'its payment was sent once');
is(BgTest::worker_pid($node), $pid, 'the worker kept its pid through the errors');

$node->safe_psql('postgres', 'ALTER TABLE billogram_requests DROP CONSTRAINT inject_fault');
ok( $node->poll_query_until('postgres',
		"SELECT state = 'done' AND response ->> 'id' = 'poisonq1' FROM billogram_requests WHERE billogram_id = 'poisonq1'"),
	'once the constraint is gone, the kept outcome is recorded: done, with its reply');
is(scalar @{ $mock->posts('poisonq1') }, 1, 'still sent exactly once');
($ok) = BgTest::call($node, "SELECT billogram_credit_payment('poisonsync1', 'amount', 1)");
is($ok, '', 'the refused call succeeds when made again');

# ---------------------------------------------------------------------
# A lock held on the journal: calls fail fast and send nothing.
# ---------------------------------------------------------------------
# (the invoice is read first: what the lock is to stop is the payment's
# own 'sending' row, not the ledger's record of a reading)
$node->safe_psql('postgres', "SELECT billogram_get_invoice('locked1') IS NOT NULL");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM billogram_ledger WHERE billogram_id = 'locked1'")
  or die 'the reading did not reach the ledger';
my ($lin, $lout, $lerr) = ('', '', '');
my $locker = IPC::Run::start(
	[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$lin, '>', \$lout, '2>', \$lerr);
$lin .= "BEGIN; LOCK TABLE billogram_requests IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n";
my $timer = IPC::Run::timer(30);
$timer->start;
$locker->pump until $lout =~ /locked/ || $timer->is_expired;
like($lout, qr/locked/, 'another session holds ACCESS EXCLUSIVE on the journal');

$t0 = time;
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('locked1', 'amount', 1)");
my $elapsed = time - $t0;
is($state, 'BG003', 'a call under the lock fails with BG003');
like($err, qr/DETAIL:.*lock timeout/, 'saying the worker met a lock timeout');
cmp_ok($elapsed, '<', 3, 'within the worker\'s 1 s lock_timeout and a little');
note(sprintf('the call under the lock failed after %.0f ms', $elapsed * 1000));
sleep 2;
is(scalar @{ $mock->posts('locked1') }, 0, 'and nothing was sent, then or afterwards');
is(BgTest::worker_pid($node), $pid, 'the worker is still the same process');

$lin .= "ROLLBACK;\n\\q\n";
$locker->finish;
($ok) = BgTest::call($node, "SELECT billogram_credit_payment('afterlock1', 'amount', 1)");
is($ok, '', 'payments flow again once the lock is released');
$node->safe_psql('postgres',
	"SELECT billogram_enqueue_credit_payment('afterlockq1', 'amount', 1)");
ok( $node->poll_query_until('postgres',
		"SELECT state = 'done' FROM billogram_requests WHERE billogram_id = 'afterlockq1'"),
	'queued ones too');
is(scalar @{ $mock->posts('locked1') }, 0, 'the refused call was never sent');
is(BgTest::worker_pid($node), $pid, 'one worker pid from start to end');

$node->stop;
$mock->stop;
done_testing();
