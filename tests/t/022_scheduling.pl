# The worker keeps time (issue 21): a queued payment that waits on an
# earlier payment of its invoice (one being settled) never makes the worker
# spin, and it goes as soon as that payment's verdict is final, not at the
# next sweep.
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
my $node = $mock->new_node('scheduling', extra => "billogram.settle_time = '40s'\n");
my $pid = BgTest::worker_pid($node);

sub query { return $node->safe_psql('postgres', $_[0]); }

# utime + stime of a process, in clock ticks, from /proc
sub cpu_ticks
{
	my ($p) = @_;
	my $stat = slurp_file("/proc/$p/stat");
	$stat =~ s/^.*\) //s;
	my @f = split / /, $stat;
	return $f[11] + $f[12];
}
my $hz = `getconf CLK_TCK` + 0 || 100;

# The first payment is dropped before Billogram applies it: in_doubt, and
# 'checking' until billogram.settle_time has passed since it was sent.
query("SELECT billogram_enqueue_credit_payment('ndropsch1', 'amount', 10)");
$node->poll_query_until('postgres',
	"SELECT evidence->>'verdict' = 'checking' FROM billogram_requests WHERE billogram_id = 'ndropsch1'")
  or die 'the first payment was not being checked';

# The second one waits for it.
query("SELECT billogram_enqueue_credit_payment('ndropsch1', 'amount', 20)");
my $t0 = time;
my $c0 = cpu_ticks($pid);
my $x0 = query("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'");
sleep 30;
my $c1 = cpu_ticks($pid);
my $elapsed = time - $t0;
my $x1 = query("SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'");
my $share = 100 * ($c1 - $c0) / $hz / $elapsed;
note sprintf('worker CPU while the row waited %.1f s: %.2f %% (%d ticks); commits in the database: %d',
	$elapsed, $share, $c1 - $c0, $x1 - $x0);
ok($share < 5, sprintf('the worker used %.2f %% of a CPU while a queued row waited on its invoice', $share));
is(query("SELECT state FROM billogram_requests WHERE billogram_id = 'ndropsch1' AND amount = 20"),
	'pending', 'meanwhile the second payment waits, pending');
is(scalar @{ $mock->posts('ndropsch1') }, 1, 'and is not sent');

# The first one's verdict becomes final (not_applied); the invoice is then
# free and the second payment goes at once, both times read by our own clock.
# (ndrop: Billogram drops every payment of this invoice before applying it,
# so the second one ends in_doubt as well; what matters is when it left)
$node->poll_query_until('postgres',
	"SELECT state <> 'pending' AND sent_at IS NOT NULL FROM billogram_requests "
	  . "WHERE billogram_id = 'ndropsch1' AND amount = 20")
  or die 'the second payment was not sent: '
  . query("SELECT json_agg(r) FROM (SELECT id, state, amount, sent_at, settle_at, now(), evidence, "
	  . "next_attempt_at, verify_reason FROM billogram_requests) r")
  . ' requests: ' . join(', ', map { "$_->{method} $_->{time}" } @{ $mock->requests('ndropsch1') });
is(query("SELECT evidence->>'verdict' FROM billogram_requests WHERE billogram_id = 'ndropsch1' AND amount = 10"),
	'not_applied', 'the first payment was found not applied');
my $gap = query(
	"SELECT extract(epoch FROM s.sent_at - (f.evidence->>'checked_at')::timestamptz) "
	  . "FROM billogram_requests f, billogram_requests s "
	  . "WHERE f.billogram_id = 'ndropsch1' AND f.amount = 10 AND s.billogram_id = 'ndropsch1' AND s.amount = 20");
note "the second payment left $gap s after the first one's verdict";
ok($gap >= 0 && $gap < 2, "it left as soon as the verdict was final ($gap s), not at the next sweep");
is(scalar @{ $mock->posts('ndropsch1') }, 2, 'two payments reached Billogram, one each');

# --- after a crash, the rows recovery made in_doubt keep their invoice busy ---
query("SELECT billogram_enqueue_credit_payment('slow3000rst1', 'amount', 7)");
$node->poll_query_until('postgres',
	"SELECT state = 'sending' FROM billogram_requests WHERE billogram_id = 'slow3000rst1'")
  or die 'the payment did not leave';
$node->stop('immediate');
$node->start;
BgTest::worker_pid($node);
my ($state) = BgTest::call($node,
	"SET billogram.timeout = '1s'; SELECT billogram_credit_payment('slow3000rst1', 'amount', 8)");
is($state, '55006', 'a call on the invoice of a row caught sending by the crash waits for its verdict');
is(scalar @{ $mock->posts('slow3000rst1') }, 1, 'and was not sent');
$node->poll_query_until('postgres',
	"SELECT state = 'done' FROM billogram_requests WHERE billogram_id = 'slow3000rst1' AND amount = 7")
  or die 'the payment caught by the crash was not settled';
($state) = BgTest::call($node,
	"SET billogram.timeout = '5s'; SELECT billogram_credit_payment('slow3000rst1', 'amount', 9)");
is($state, '', 'once its verdict is final (applied), the invoice takes the next call');
is(scalar @{ $mock->posts('slow3000rst1') }, 2, 'which is sent once');

# --- a payment queued behind another request of its invoice ---
# The queue's next due time leaves out a row that waits on its invoice, so
# whatever frees the invoice must wake the queue: a queued payment behind a
# synchronous call, behind another queued payment, and behind its invoice's
# first reading goes as soon as that one is recorded, not at the next sweep
# (10 s).  (With the wakes of
# outcomes and readings taken out, the three gaps were 7.1, 7.1 and 4.3 s.)
# slow3000: Billogram answers every request of the invoice, GET or POST,
# after 3 s.
sub wait_leaves
{
	my ($id, $amount) = @_;
	$node->poll_query_until('postgres',
		"SELECT state NOT IN ('pending', 'sending') FROM billogram_requests "
		  . "WHERE billogram_id = '$id' AND amount = $amount")
	  or die "the payment of $amount on $id did not end";
}

# the seconds from the first request's end to the second one's leaving, by
# our own clock (the claim's now() is its batch's start, which may be the
# very batch that recorded the first outcome: then it is a little negative)
sub gap_after
{
	my ($id) = @_;
	return query("SELECT extract(epoch FROM s.sent_at - f.finished_at) "
		  . "FROM billogram_requests f, billogram_requests s "
		  . "WHERE f.billogram_id = '$id' AND f.amount = 1 AND s.billogram_id = '$id' AND s.amount = 2");
}

my $call = BgTest::start_psql($node,
	"SET billogram.timeout = '20s'; SELECT billogram_credit_payment('slow3000wake1', 'amount', 1)");
$node->poll_query_until('postgres',
	"SELECT state = 'sending' FROM billogram_requests WHERE billogram_id = 'slow3000wake1'")
  or die 'the synchronous call did not leave';
query("SELECT billogram_enqueue_credit_payment('slow3000wake1', 'amount', 2)");
is(query("SELECT state FROM billogram_requests WHERE billogram_id = 'slow3000wake1' AND amount = 2"),
	'pending', 'a payment queued while a call on its invoice is sending waits');
$call->{h}->finish;
is($call->{err}, '', 'the call succeeds');
wait_leaves('slow3000wake1', 2);
$gap = gap_after('slow3000wake1');
note "the queued payment left $gap s after the call's outcome";
ok($gap > -1 && $gap < 2, "it left as soon as the call's outcome was recorded ($gap s)");

query("SELECT billogram_enqueue_credit_payment('slow3000wake2', 'amount', 1)");
$node->poll_query_until('postgres',
	"SELECT state = 'sending' FROM billogram_requests WHERE billogram_id = 'slow3000wake2'")
  or die 'the first queued payment did not leave';
query("SELECT billogram_enqueue_credit_payment('slow3000wake2', 'amount', 2)");
wait_leaves('slow3000wake2', 1);
wait_leaves('slow3000wake2', 2);
$gap = gap_after('slow3000wake2');
note "the second queued payment left $gap s after the first one's outcome";
ok($gap > -1 && $gap < 2, "behind a queued payment, too ($gap s)");

# the first payment of slow3000wake2 was read first (its invoice unknown)
my @reqs = @{ $mock->requests('slow3000wake2') };
my ($get) = grep { $_->{method} eq 'GET' } @reqs;
my ($post) = grep { $_->{method} eq 'POST' } @reqs;
my $after_read = $post->{time} - $get->{time} - 3;
note sprintf('the first payment left %.2f s after its reading was answered', $after_read);
ok($after_read > -1 && $after_read < 2,
	sprintf('a payment read first leaves once its reading is recorded (%.2f s)', $after_read));
is(scalar @{ $mock->posts('slow3000wake2') }, 2, 'each queued payment was sent once');

# --- a reading in flight is not due again ---
# Nothing is written when a reading starts: while its GET is in flight the
# invoice is left out of the readings due and of the queue's next due time
# (bg_inflight_busy_ids).  So the invoice is read once, however long the
# GET takes, and the worker does not spin meanwhile.
query("SELECT billogram_enqueue_credit_payment('slow3000read1', 'amount', 1)");
my $get_started;
for (1 .. 200)
{
	($get_started) = grep { $_->{method} eq 'GET' } @{ $mock->requests('slow3000read1') };
	last if $get_started;
	sleep 0.05;
}
ok($get_started, 'the invoice of a first payment is read');
my $reader = BgTest::worker_pid($node);	# the node was restarted above
my $r0 = time;
my $rc0 = cpu_ticks($reader);
sleep 2;
my $rc1 = cpu_ticks($reader);
my $window_end = time;
my $read_share = 100 * ($rc1 - $rc0) / $hz / ($window_end - $r0);
note sprintf('worker CPU during 2 s of a reading in flight: %.2f %%', $read_share);
ok($window_end < $get_started->{time} + 3,
	'the CPU was measured while the reading was in flight');
ok($read_share < 20,
	sprintf('the worker does not spin while a reading is in flight (%.2f %% of a CPU)', $read_share));
wait_leaves('slow3000read1', 1);
my @gets = grep { $_->{method} eq 'GET' } @{ $mock->requests('slow3000read1') };
is(scalar @gets, 1, 'the invoice was read once');
is(scalar @{ $mock->posts('slow3000read1') }, 1, 'and its payment sent once');

# --- billogram.database changed while payments were pending ---
# Two payments queued in "elsewhere" while Billogram was down; then the
# worker is moved back to postgres: it says so when it starts.
$node->safe_psql('postgres', 'CREATE DATABASE elsewhere');
$node->safe_psql('elsewhere', 'CREATE EXTENSION billogram');
$node->safe_psql('postgres', "ALTER SYSTEM SET billogram.database = 'elsewhere'");
$node->restart;
$mock->fault('{"mode":"down"}');
$node->safe_psql('elsewhere',
	"SELECT billogram_enqueue_credit_payment('otherdb1', 'amount', 5), "
	  . "billogram_enqueue_credit_payment('otherdb2', 'amount', 6)");
$node->safe_psql('postgres', 'ALTER SYSTEM RESET billogram.database');
$mock->fault('{"mode":"none"}');
my $offset = -s $node->logfile;
$node->restart;
ok($node->wait_for_log(
		qr/WARNING:  billogram: database "elsewhere" holds 2 pending payments that no worker sends/, $offset),
	'at start the worker warns of the pending payments in another database');
like(slurp_file($node->logfile, $offset),
	qr/DETAIL:  The billogram worker serves database "postgres" \(billogram.database\) only./,
	'naming the database it serves');
is($node->safe_psql('elsewhere', "SELECT count(*) FROM billogram_requests WHERE state = 'pending'"),
	'2', 'they are left pending, not lost');
is(scalar @{ $mock->posts('otherdb1') }, 0, 'and nothing of theirs was sent');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'billogram database check'"),
	'every database check ended');

$node->stop;
$mock->stop;
done_testing();
