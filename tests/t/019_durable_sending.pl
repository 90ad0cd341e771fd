# Route 7 of issue 19: the worker owns its durability.  synchronous_commit =
# off set for the whole server (ALTER SYSTEM), for billogram.database (ALTER
# DATABASE) and for the worker's role (ALTER ROLE of the bootstrap
# superuser) does not reach the commit that records a payment as 'sending'
# before it leaves.  With wal_writer_delay at 10 s an asynchronous commit is
# still only in WAL buffers when the server is stopped with -m immediate
# right after the POST reached the mock: a queued row would come back
# pending and be sent again, a synchronous call's row would be lost.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mock = BgTest->start_mock;
my $node = $mock->new_node('durable',
	extra => "wal_writer_delay = '10s'\nbillogram.settle_time = 5\n");

my $db = $node->safe_psql('postgres', 'SHOW billogram.database');
my $superuser = $node->safe_psql('postgres',
	'SELECT rolname FROM pg_roles WHERE oid = 10');
$node->safe_psql('postgres', "ALTER SYSTEM SET synchronous_commit = off");
$node->safe_psql('postgres',
	qq{ALTER DATABASE "$db" SET synchronous_commit = off});
$node->safe_psql('postgres',
	qq{ALTER ROLE "$superuser" SET synchronous_commit = off});
$node->restart;
BgTest::worker_pid($node);
is($node->safe_psql($db, 'SHOW synchronous_commit'), 'off',
	"a session of the worker's role in its database commits asynchronously");

# Wait until the mock has received a POST for $id; returns how many.
sub wait_posted
{
	my ($id) = @_;
	for (1 .. 300)
	{
		my $n = scalar @{ $mock->posts($id) };
		return $n if $n;
		usleep(50_000);
	}
	return 0;
}

# Both invoices are read first (the GETs feed the ledger), so that each
# payment leaves at once rather than after a slow reading of its own; the
# ledger's rows are made durable by the checkpoint.
$node->safe_psql('postgres',
	"SELECT count(billogram_get_invoice(i)) FROM unnest(ARRAY['slow3000q19', 'slow3000s19']) i");
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM billogram_ledger WHERE billogram_id IN ('slow3000q19', 'slow3000s19')")
  or die 'the readings did not reach the ledger';
$node->safe_psql('postgres', 'CHECKPOINT');

# A queued payment: the queueing commit itself is made durable, so that
# what is tested is the worker's commit of 'sending' alone.
my $queued = 'slow3000q19';
my $qid = $node->safe_psql('postgres', qq{
	BEGIN;
	SET LOCAL synchronous_commit = on;
	SELECT billogram_enqueue_credit_payment('$queued', 'amount', 25);
	COMMIT;});
is(wait_posted($queued), 1, 'the queued payment reached the mock');

# A synchronous call, left waiting for the slow reply.
my $called = 'slow3000s19';
my $call = BgTest::start_psql($node,
	"SELECT billogram_credit_payment('$called', 'amount', 30)");
is(wait_posted($called), 1, 'the synchronous call reached the mock');

# No commit of any other session between the worker's and the crash: an
# asynchronous commit would be flushed by it.
$node->stop('immediate');
$call->{h}->finish;
$node->start;
BgTest::worker_pid($node);

# the final state: nothing pending or sending, no verdict still being checked
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 0 FROM billogram_requests
		 WHERE state IN ('pending', 'sending')
		    OR (state = 'in_doubt' AND settle_at IS NOT NULL)}),
	'every row reached a final state');
sleep 4;    # longer than the slow reply: time for any (wrong) resend

is(scalar @{ $mock->posts($queued) }, 1,
	'the queued payment was sent exactly once');
is( $node->safe_psql('postgres', qq{
		SELECT state IN ('in_doubt', 'done') AND attempts = 1
		       AND evidence IS NOT NULL
		  FROM billogram_requests WHERE id = $qid}),
	't',
	"its 'sending' survived the crash: the row was settled from evidence, not resent");

is(scalar @{ $mock->posts($called) }, 1,
	'the synchronous call was sent exactly once');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || bool_and(state IN ('in_doubt', 'done'))
		  FROM billogram_requests WHERE billogram_id = '$called'}),
	'1 true',
	"the call's 'sending' row survived the crash: the payment is on record");

$node->stop;
$mock->stop;
done_testing();
