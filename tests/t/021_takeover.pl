# Issue 19, route 8: a failover to an asynchronous standby that lagged.
# The old primary sent a payment whose 'sending' commit never reached the
# standby; the promoted standby finds the row pending.  It sends an
# inherited row only when its invoice shows no payment the ledger did not
# know of; otherwise the row is held for an operator, with the reason.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = BgTest->start_mock;
my $primary = PostgreSQL::Test::Cluster->new('old_primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $mock->config);
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION billogram');
BgTest::worker_pid($primary);
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('lagging_standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;

# The invoice is known: a first payment, read and answered.
my ($state) = BgTest::call($primary, "SELECT billogram_credit_payment('tko1', 'amount', 1)");
is($state, '', 'a first payment on the old primary');

# Two payments reach the standby as pending.  They are queued put off, in
# one transaction, so that the old primary's worker touches neither before
# the standby stops: a 'sending' (or a retry's) commit streamed to the
# standby would make it another case, a row caught sending (005, 016).
$primary->safe_psql('postgres', qq{
	BEGIN;
	SELECT billogram_enqueue_credit_payment('tko1', 'amount', 7);
	SELECT billogram_enqueue_credit_payment('tko2', 'amount', 3);
	UPDATE billogram_requests SET next_attempt_at = now() + interval '1 hour' WHERE amount IN (7, 3);
	COMMIT;
});
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres',
		"SELECT string_agg(state, ',' ORDER BY id) FROM billogram_requests WHERE amount IN (7, 3)"),
	'pending,pending', 'the standby has both queued rows, pending');

# The standby falls behind (stopped); the old primary sends the payment of 7
# on tko1; tko2's row stays put off, so it stays unsent.
$standby->stop('fast');
$primary->safe_psql('postgres',
	"UPDATE billogram_requests SET next_attempt_at = now() WHERE billogram_id = 'tko1' AND amount = 7");
$primary->safe_psql('postgres', 'SELECT billogram_wake_worker_at_commit()');
$primary->poll_query_until('postgres',
	"SELECT state = 'done' FROM billogram_requests WHERE billogram_id = 'tko1' AND amount = 7")
  or die 'the old primary did not send the payment';
is(scalar @{ $mock->posts('tko1') }, 2, 'the old primary sent it: two payments on tko1');
$primary->stop('immediate');

# The standby comes back without its primary and is promoted.
$standby->start;
$standby->promote;
BgTest::worker_pid($standby);
# its copy of tko1's row is due now (it was put off on the old primary)
$standby->safe_psql('postgres',
	"UPDATE billogram_requests SET next_attempt_at = now() WHERE billogram_id = 'tko1' AND amount = 7");
$standby->safe_psql('postgres', 'SELECT billogram_wake_worker_at_commit()');
$standby->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM billogram_requests WHERE state IN ('pending', 'sending') "
	  . "AND billogram_id = 'tko1'")
  or die 'the inherited row was not decided';
is($standby->safe_psql('postgres',
		"SELECT state || ':' || (error->>'kind') FROM billogram_requests WHERE billogram_id = 'tko1' AND amount = 7"),
	'held:takeover', 'the inherited row whose invoice shows an unknown payment is held');
like($standby->safe_psql('postgres',
		"SELECT error->>'message' FROM billogram_requests WHERE billogram_id = 'tko1' AND amount = 7"),
	qr/may have sent it/, 'with the reason');
sleep 2;
is(scalar @{ $mock->posts('tko1') }, 2, 'it was not sent a second time');
ok($standby->log_contains('took over on a new timeline'), 'the worker said so in the log');

# tko2, which the old primary never sent: read, nothing unknown, sent once
$standby->safe_psql('postgres',
	"UPDATE billogram_requests SET next_attempt_at = now() WHERE billogram_id = 'tko2'");
$standby->safe_psql('postgres', 'SELECT billogram_wake_worker_at_commit()');
ok(BgTest::wait_settled($standby), 'the other inherited row is decided');
is($standby->safe_psql('postgres',
		"SELECT state FROM billogram_requests WHERE billogram_id = 'tko2'"),
	'done', 'an inherited row whose invoice shows nothing unknown is sent');
is(scalar @{ $mock->posts('tko2') }, 1, 'once');

# the operator releases the held row after checking: it goes, once
$standby->safe_psql('postgres', "SELECT billogram_fail_held()");
is($standby->safe_psql('postgres',
		"SELECT state FROM billogram_requests WHERE billogram_id = 'tko1' AND amount = 7"),
	'failed', "the operator's decision is recorded");

$standby->stop;
$mock->stop;
done_testing();
