# Rate limits and outages pause, they do not fail: a 429 or 503 pauses all
# sending for the Retry-After (or the worker's own backoff), then one
# request probes before full concurrency returns; synchronous calls during
# the pause fail at once and send nothing; a payment that did not arrive is
# retried by age (billogram.retry_for), not by a count of tries.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $mock = BgTest->start_mock;
my $node = $mock->new_node('pause');
BgTest::worker_pid($node);
$node->safe_psql('postgres', q{
	CREATE TABLE payments (id bigserial PRIMARY KEY, invoice text NOT NULL, amount numeric(12, 2));
	CREATE TRIGGER pay AFTER INSERT ON payments FOR EACH ROW
	    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount');
});

# --- 429 to everything for a while ---
$mock->reset;
$mock->fault('{"mode":"status","status":429,"retry_after":1}');
my $start = time;
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'rl' || g, 1 FROM generate_series(1, 40) g");
sleep 6;

# a synchronous call during the pause: refused at once, not sent
my $t0 = time;
my ($state, $out, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('rlsync1', 'amount', 1)");
my $took = time - $t0;
is($state, 'BG429', 'a synchronous call during the pause: BG429');
like($err, qr/was not sent: Billogram asked to wait/, 'saying it was not sent');
ok($took < 1.5, sprintf('answered at once (%.2f s)', $took));

my $window = scalar @{ $mock->requests };
note "requests the mock received in the first 6 s of 429s: $window";
ok($window >= 2 && $window <= 8,
	"only a handful of requests while refused ($window in 6 s for 40 queued payments)");
is(scalar @{ $mock->posts('rlsync1') }, 0, 'the refused synchronous call never reached the API');
is($node->safe_psql('postgres', "SELECT count(*) FROM billogram_requests WHERE state = 'failed'"),
	'0', 'nothing failed');

# Billogram accepts again: every queued payment goes through, once
$mock->fault('{"mode":"none"}');
ok(BgTest::wait_settled($node, 120), 'the queue drains once Billogram answers again');
is($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT state, ',') FROM billogram_requests WHERE billogram_id LIKE 'rl%'"),
	'done', 'every payment done');
my $applied = $mock->post_counts(qr/^rl\d/);
is(scalar(keys %$applied), 40, 'all 40 reached Billogram');
my @applied_twice = grep { $mock->invoice($_)->{payments}->@* != 1 } keys %$applied;
is(scalar @applied_twice, 0, 'each applied exactly once');
ok($node->log_contains(qr/sending is paused for \d+ ms, then one request probes/),
	'the pause is logged');
ok($node->log_contains(qr/Billogram answers again; sending resumes/), 'and the end of it');

# --- an outage longer than the old attempt budget: nothing fails ---
# (their invoices are read first, so that what the outage meets is the
# payments themselves)
$node->safe_psql('postgres',
	"SELECT count(billogram_get_invoice('out' || g)) FROM generate_series(1, 10) g");
$node->poll_query_until('postgres',
	"SELECT count(*) = 10 FROM billogram_ledger WHERE billogram_id LIKE 'out%'")
  or die 'the readings did not reach the ledger';
$mock->fault('{"mode":"down"}');
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'out' || g, 2 FROM generate_series(1, 10) g");
sleep 2;
# ten tries used to mark a payment failed; make them all 50 and due now:
# their next failed try, beyond any count, leaves them pending
# (a row being sent at the time of the update is caught at the next poll)
ok($node->poll_query_until('postgres', q{
	WITH u AS (UPDATE billogram_requests SET attempts = 50, next_attempt_at = now()
	            WHERE billogram_id LIKE 'out%' AND state = 'pending' AND attempts < 50 RETURNING 1)
	SELECT bool_and(attempts > 50) AND (SELECT count(*) FROM u) = 0
	  FROM billogram_requests WHERE billogram_id LIKE 'out%'}),
	'each was tried again past fifty tries');
is($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT state, ',') FROM billogram_requests WHERE billogram_id LIKE 'out%'"),
	'pending', 'during the outage no payment is failed, whatever its count of tries');
$mock->fault('{"mode":"none"}');
# their backoff after fifty tries is minutes: make them due, as an operator's resend would
$node->safe_psql('postgres',
	"UPDATE billogram_requests SET next_attempt_at = now() WHERE billogram_id LIKE 'out%' AND state = 'pending'");
ok(BgTest::wait_settled($node, 60), 'after the outage the queue drains');
is($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT state, ',') FROM billogram_requests WHERE billogram_id LIKE 'out%'"),
	'done', 'every payment of the outage done');
is_deeply($mock->post_counts(qr/^out/), { map { ("out$_" => 1) } 1 .. 10 },
	'each sent once');

done_testing();
