# Rate limits and outages pause, they do not fail: a 429 or 503 pauses all
# sending for the Retry-After, exactly (or the worker's own backoff, 1 s
# doubling), then one request probes before full concurrency returns; only
# the probe's answer lengthens or ends a pause, not the answers to the
# requests already under way when it began; synchronous calls during the
# pause fail at once and send nothing; a payment that did not arrive is
# retried by age (billogram.retry_for), not by a count of tries.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP qw(decode_json);
use Time::HiRes qw(time sleep);

# The log's lines from byte offset on.
sub log_since
{
	my ($node, $offset) = @_;
	open(my $fh, '<', $node->logfile) or die "could not open the log: $!";
	seek($fh, $offset, 0);
	local $/;
	my $text = <$fh>;
	close($fh);
	return $text // '';
}

# The pauses the worker logged since offset, in ms.
sub pauses_logged
{
	my ($node, $offset) = @_;
	return [ log_since($node, $offset) =~ /paused for (\d+) ms, then one request probes/g ];
}

my $mock = BgTest->start_mock;
my $node = $mock->new_node('pause');
BgTest::worker_pid($node);
$node->safe_psql('postgres', q{
	CREATE TABLE payments (id bigserial PRIMARY KEY, invoice text NOT NULL, amount numeric(12, 2));
	CREATE TRIGGER pay AFTER INSERT ON payments FOR EACH ROW
	    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount');
});

is($node->safe_psql('postgres', 'SHOW billogram.max_connections'), '8',
	'eight connections, so eight requests in flight');

# --- 429 to everything for a while ---
# (a Retry-After longer than the 6 s looked at: no probe goes meanwhile)
$mock->reset;
$mock->fault('{"mode":"status","status":429,"retry_after":10}');
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

# --- Retry-After: 2 for 10 s with eight requests in flight ---
# Each of the eight 429s once doubled the pause, to 128 s: only the first
# starts it, for exactly 2 s; the probe's 429s pause 2 s again; sending
# resumes within 3 s of the limit's end.
$mock->reset;
my $offset = -s $node->logfile;
my $limit = decode_json($mock->fault(
		'{"mode":"status","status":429,"retry_after":2,"for_s":10}'))->{fault};
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'ra' || g, 1 FROM generate_series(1, 40) g");
ok(BgTest::wait_settled($node, 120), 'the queue drains after the limit');
is($node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE state = 'done') || '/' || count(*) FROM billogram_requests WHERE billogram_id LIKE 'ra%'"),
	'40/40', 'every payment done');
# the requests of these payments: the readings of their invoices (GETs)
# first, then the payments (POSTs)
my @ra_requests = grep { ($_->{id} // '') =~ /^ra\d/ } @{ $mock->requests };
my @limited = grep { ($_->{fault} // '') =~ /^global-status-429/ } @ra_requests;
my @accepted = grep { !defined $_->{fault} && $_->{method} eq 'POST' } @ra_requests;
ok(@limited > 0, sprintf('%d requests were answered 429', scalar @limited));
my $t_first = $limited[0]->{time};
my $burst = grep { $_->{time} < $t_first + 1 } @limited;
ok($burst >= 8, "$burst requests were in flight when the limit started");
is(scalar(grep { $_->{time} < $limit->{until} } @accepted), 0,
	'none accepted during the limit');
my $resumed = $accepted[0]->{time} - $limit->{until};
note sprintf('first accepted POST %.2f s after the limit ended', $resumed);
ok($resumed >= 0 && $resumed < 3,
	sprintf('sending resumed within 3 s of the limit ending (%.2f s)', $resumed));
my $pauses = pauses_logged($node, $offset);
ok(@$pauses >= 2 && !grep({ $_ != 2000 } @$pauses),
	'each pause is the Retry-After, exactly: ' . join(' ', @$pauses));
my $probes = grep { $_->{time} >= $t_first + 1 } @limited;
is($probes, scalar(@$pauses) - 1, "after the burst, one request per pause ($probes)");
my $ra_applied = $mock->post_counts(qr/^ra\d/);
is(scalar(keys %$ra_applied), 40, 'all 40 reached Billogram');
is(scalar(grep { $mock->invoice($_)->{payments}->@* != 1 } keys %$ra_applied), 0,
	'each applied exactly once');

# --- 429 without Retry-After: the backoff doubles on the probe's answers only ---
$mock->reset;
$offset = -s $node->logfile;
$limit = decode_json($mock->fault('{"mode":"status","status":429,"for_s":5}'))->{fault};
$node->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'nb' || g, 1 FROM generate_series(1, 16) g");
ok(BgTest::wait_settled($node, 120), 'the queue drains after the limit without Retry-After');
is($node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE state = 'done') || '/' || count(*) FROM billogram_requests WHERE billogram_id LIKE 'nb%'"),
	'16/16', 'every payment done');
# first 429 at ~0 s: 1 s; the probe at ~1 s: 2 s; the probe at ~3 s: 4 s;
# the probe at ~7 s is after the limit (5 s) and ends the pause
is_deeply(pauses_logged($node, $offset), [ 1000, 2000, 4000 ],
	'the eight 429s of the burst paused once for 1 s, then each probe\'s 429 doubled it');
my @nb_requests = grep { ($_->{id} // '') =~ /^nb\d/ } @{ $mock->requests };
my @nb_limited = grep { ($_->{fault} // '') =~ /^global-status-429/ } @nb_requests;
my $nb_burst = grep { $_->{time} < $nb_limited[0]->{time} + 0.5 } @nb_limited;
ok($nb_burst >= 8, "$nb_burst requests in flight when the limit started");
is(scalar(@nb_limited) - $nb_burst, 2, 'then one probe per pause was refused');
my @nb_accepted = grep { !defined $_->{fault} && $_->{method} eq 'POST' } @nb_requests;
$resumed = $nb_accepted[0]->{time} - $limit->{until};
ok($resumed >= 0 && $resumed < 4.5,
	sprintf('sending resumed at the end of the 4 s pause (%.2f s after the limit)', $resumed));
is(scalar(grep { $mock->invoice($_->{id})->{payments}->@* != 1 } @nb_accepted), 0,
	'each applied exactly once');

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

$node->stop;
$mock->stop;
done_testing();
