# statement_timeout and pg_cancel_backend end the wait at once; the worker
# still finishes the request and logs its outcome; a request cancelled before
# the worker took it is never sent.
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
my $node = $mock->new_node('cancel', extra => "billogram.max_connections = 1\n");
BgTest::worker_pid($node);

sub wait_for_request
{
	my ($id) = @_;
	for (1 .. 200)
	{
		return 1 if @{ $mock->posts($id) };
		usleep(25_000);
	}
	return 0;
}

sub start_call
{
	my ($id, $pre) = @_;
	my %c = (out => '', err => '');
	$c{h} = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		  ($pre // '') . "SELECT billogram_credit_payment('$id', 'amount', 1)" ],
		'>', \$c{out}, '2>', \$c{err});
	return \%c;
}

# The invoices are read first (billogram_get_invoice feeds the ledger), so
# that the payments below go at once rather than after a reading of their
# own: what is cancelled is the wait for the payment's reply.
for my $id (qw(slow3000a slow3000b))
{
	my ($gstate) = BgTest::call($node, "SELECT billogram_get_invoice('$id') IS NOT NULL");
	is($gstate, '', "$id read");
}
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM billogram_ledger WHERE billogram_id IN ('slow3000a', 'slow3000b')")
  or die 'the readings did not reach the ledger';

# statement_timeout while the reply is awaited
my $t0 = time;
my ($state, undef, $err) = BgTest::call($node,
	"SET statement_timeout = 300; SELECT billogram_credit_payment('slow3000a', 'amount', 1)");
my $elapsed = time - $t0;
is($state, '57014', 'statement_timeout cancels the call');
cmp_ok($elapsed, '<', 2.0, 'long before the 3 s reply');
note(sprintf('statement_timeout 300 ms: call returned after %.0f ms', $elapsed * 1000));
like($err, qr/WARNING:.*had already been sent/, 'a warning says the payment had been sent');

# pg_cancel_backend while the reply is awaited
my $c = start_call('slow3000b');
ok(wait_for_request('slow3000b'), 'the request reached the mock');
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE query LIKE '%slow3000b%' AND pid <> pg_backend_pid()");
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$c->{h}->finish;
$elapsed = time - $t0;
like($c->{err}, qr/canceling statement due to user request/, 'pg_cancel_backend ends the call');
cmp_ok($elapsed, '<', 1.0, 'at once, not when the reply comes');
note(sprintf('pg_cancel_backend: call returned %.0f ms after the cancel', $elapsed * 1000));

# the worker finishes both requests and logs what became of them
ok( $node->wait_for_log(qr/caller of the credit payment on slow3000b stopped waiting/),
	'the worker logs that the caller stopped waiting');
ok($node->wait_for_log(qr/credit payment on slow3000b was registered/),
	'and the outcome of the request');
is(scalar @{ $mock->posts('slow3000a') }, 1, 'the first request was sent once');
is(scalar @{ $mock->posts('slow3000b') }, 1, 'the second request was sent once');

# With max_connections = 1 and a slow request in flight, a second call waits
# in the queue; cancelling it there means it is never sent.
my $busy = start_call('slow2000c');
ok(wait_for_request('slow2000c'), 'a slow request occupies the only connection');
my $queued = start_call('queued1');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%queued1%' AND wait_event_type = 'Extension' AND pid <> pg_backend_pid()")
  or die;
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%queued1%' AND pid <> pg_backend_pid()");
$queued->{h}->finish;
$busy->{h}->finish;
like($queued->{err}, qr/NOTICE:.*was not sent/, 'the cancelled queued call says it was not sent');
like($busy->{out}, qr/slow2000c/, 'the call in flight completed');
($state) = BgTest::call($node,
	"SELECT billogram_credit_payment('after1', 'amount', 1)");
is($state, '', 'the worker goes on serving');
is(scalar @{ $mock->posts('queued1') }, 0, 'the cancelled queued request was never sent');

$node->stop;
$mock->stop;
done_testing();
