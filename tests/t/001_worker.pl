# The worker's life: started by the postmaster, restarted after a crash,
# and a clear 55000 error when it is missing.  An in-flight request is never
# re-sent by a restarted worker.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $mock = BgTest->start_mock;
my $node = $mock->new_node('worker');

my $pid = BgTest::worker_pid($node);
ok($pid > 0, 'the postmaster started the billogram worker');

my ($state, $out) = BgTest::call($node,
	"SELECT inv->>'id' FROM billogram_credit_payment('w1', 'amount', 5) inv");
is($state, '', 'a call succeeds');
like($out, qr/^w1$/m, 'and returns the invoice');

# Idle, the worker gives its free heap back to the kernel and says so in
# pg_stat_activity (src/worker_memory.c); busy, it keeps it; idle again,
# it gives it back again.
my $idle = "SELECT query = 'billogram: idle, free memory given back' "
  . "FROM pg_stat_activity WHERE backend_type = 'billogram worker'";
ok($node->poll_query_until('postgres', $idle), 'an idle worker gives its free heap back');
my ($o, $e) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
	  "SELECT billogram_credit_payment('slow1500k', 'amount', 5)" ],
	'>', \$o, '2>', \$e);
ok($node->poll_query_until('postgres', $idle, 'f'), 'a payment in flight: the worker is busy');
$h->finish;
like($o, qr/slow1500k/, 'the payment was made');
ok($node->poll_query_until('postgres', $idle), 'idle again, it gives its free heap back again');

# A request in flight when the worker is SIGKILLed: PostgreSQL restarts every
# process, the caller's session ends, and the new worker does not resend.
($o, $e) = ('', '');
$h = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
	  "SELECT billogram_credit_payment('slow3000k', 'amount', 5)" ],
	'>', \$o, '2>', \$e);
for (1 .. 100)
{
	last if @{ $mock->posts('slow3000k') };
	usleep(50_000);
}
is(scalar @{ $mock->posts('slow3000k') }, 1, 'the slow request reached the mock');
kill 'KILL', $pid;
$h->finish;
like($e, qr/terminat|server closed the connection/,
	'the waiting session ends with the crash restart');

my $newpid = BgTest::worker_pid($node);
isnt($newpid, $pid, 'a new worker runs after the SIGKILL');
($state, $out) = BgTest::call($node,
	"SELECT inv->>'id' FROM billogram_credit_payment('w2', 'amount', 5) inv");
is($state, '', 'calls work again after the crash restart');
sleep 4;    # longer than the slow reply: time for any (wrong) resend
is(scalar @{ $mock->posts('slow3000k') }, 1,
	'the request in flight at the crash was sent exactly once');

# pg_terminate_backend on the worker: it exits and the postmaster restarts it
$node->safe_psql('postgres', "SELECT pg_terminate_backend($newpid)");
my $third = BgTest::worker_pid($node);
ok($node->poll_query_until('postgres',
		"SELECT pid <> $newpid FROM pg_stat_activity WHERE backend_type = 'billogram worker'"),
	'a terminated worker is restarted');

$node->stop;

# No worker: billogram.database names a database that does not exist, so the
# worker cannot start.  The call fails at once with 55000 and a hint.
my $broken = $mock->new_node('noworker', extra => "billogram.database = 'nosuchdb'\n");
($state, undef, my $err) = BgTest::call($broken,
	"SELECT billogram_credit_payment('nw1', 'amount', 5)");
is($state, '55000', 'no running worker: SQLSTATE 55000');
like($err, qr/background worker is not running/, 'the message says the worker is not running');
like($err, qr/HINT:.*billogram\.database/, 'the hint says what to check');
is(scalar @{ $mock->posts('nw1') }, 0, 'nothing was sent');
# the queue of a database the worker does not serve would never be sent
($state, undef, $err) = BgTest::call($broken,
	"SELECT billogram_enqueue_credit_payment('nw2', 'amount', 5)");
is($state, '55000', 'queueing outside billogram.database: 55000');
like($err, qr/can only be queued in database "nosuchdb"/, 'naming the database that is served');
is($broken->safe_psql('postgres', 'SELECT count(*) FROM billogram_requests'), '0',
	'and nothing was queued');
$broken->stop;

# Not preloaded at all.
my $plain = PostgreSQL::Test::Cluster->new('notloaded');
$plain->init;
$plain->append_conf('postgresql.conf', "search_path = 'public, billogram'\n");
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION billogram');
($state, undef, $err) = BgTest::call($plain,
	"SELECT billogram_credit_payment('np1', 'amount', 5)");
is($state, '55000', 'not in shared_preload_libraries: SQLSTATE 55000');
like($err, qr/HINT:.*shared_preload_libraries/, 'the hint says to preload it');
($state) = BgTest::call($plain,
	"SELECT billogram_enqueue_credit_payment('np2', 'amount', 5)");
is($state, '55000', 'queueing without the worker: 55000, nothing queued');
$plain->stop;

$mock->stop;
done_testing();
