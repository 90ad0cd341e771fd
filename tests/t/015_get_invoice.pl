# billogram_get_invoice() goes through the worker like a payment, but
# touches no journal: it is served while the journal is locked, it is
# refused like any request while Billogram asks to wait (and a 503 to a GET
# pauses payments too), a cancel says nothing about money, and GETs and
# payments taken together are each answered, the payments journaled and
# the GETs not.
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
my $node = $mock->new_node('get_invoice', extra => "billogram.max_connections = 4\n");
BgTest::worker_pid($node);

sub gets
{
	my ($id) = @_;
	return scalar grep { $_->{method} eq 'GET' } @{ $mock->requests($id) };
}

sub journal_rows
{
	my ($pattern) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM billogram_requests WHERE billogram_id LIKE '$pattern'");
}

# --- a GET needs no journal: served while another session locks it ---
# (lockpay1 is read first, so that the payment below needs its own
# 'sending' row, not a reading, when the lock stops it)
$node->safe_psql('postgres', "SELECT billogram_get_invoice('lockpay1') IS NOT NULL");
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM billogram_ledger WHERE billogram_id = 'lockpay1'")
  or die 'the reading did not reach the ledger';
my %locker = (out => '', err => '');
$locker{h} = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
	  'BEGIN; LOCK TABLE billogram_requests IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT' ],
	'>', \$locker{out}, '2>', \$locker{err});
$node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_locks
	 WHERE relation = 'billogram_requests'::regclass AND mode = 'AccessExclusiveLock' AND granted})
  or die 'the journal was not locked';

my $t0 = time;
my ($state, $out, $err) = BgTest::call($node,
	"SELECT billogram_get_invoice('lockget1') ->> 'remaining_sum'");
my $took = time - $t0;
is($state, '', 'a GET while the journal is locked succeeds');
is($out, '-1000.00', 'and returns the invoice');
ok($took < 0.9, sprintf('without waiting for the lock (%.2f s; the worker waits 1 s for one)', $took));

# a payment at the same moment cannot be journaled, so it is not sent
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('lockpay1', 'amount', 1)");
is($state, 'BG003', 'a payment while the journal is locked is refused unsent');
is(scalar @{ $mock->posts('lockpay1') }, 0, 'and never reaches Billogram');
$locker{h}->finish;
is(journal_rows('lock%'), '0', 'neither left a journal row');

# --- a 503 to a GET pauses every request, GETs and payments alike ---
$mock->fault('{"mode":"status","status":503,"retry_after":2,"count":1}');
($state, undef, $err) = BgTest::call($node, "SELECT billogram_get_invoice('pauseget1')");
is($state, 'BG503', 'a GET answered 503: BG503');
like($err, qr/Billogram answered the GET of invoice pauseget1 with HTTP 503/, 'named as the GET it was');
like($err, qr/HINT:\s+Billogram asks to try again later/, 'with the hint to try later');
unlike($err, qr/payment/, 'and not a word about a payment');

$t0 = time;
($state, undef, $err) = BgTest::call($node, "SELECT billogram_get_invoice('pauseget2')");
$took = time - $t0;
is($state, 'BG503', 'a GET during the pause: BG503');
like($err, qr/the GET of invoice pauseget2 was not sent: Billogram asked to wait \(HTTP 503\)/,
	'refused unsent');
unlike($err, qr/payment/, 'in words that name no payment');
ok($took < 1.5, sprintf('at once (%.2f s)', $took));
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('pausepay1', 'amount', 1)");
is($state, 'BG503', 'a payment during a pause a GET started: BG503');
like($err, qr/credit payment on pausepay1 was not sent/, 'refused unsent');
is(gets('pauseget2'), 0, 'the refused GET never reached Billogram');
is(scalar @{ $mock->posts('pausepay1') }, 0, 'nor the refused payment');
is(journal_rows('pause%'), '0', 'nothing of the pause is journaled');

# once the pause is over a GET probes, and its answer ends the pause
$node->poll_query_until('postgres',
	'SELECT paused_until IS NULL OR paused_until < clock_timestamp() FROM billogram_health')
  or die 'the pause did not end';
($state, $out) = BgTest::call($node, "SELECT billogram_get_invoice('pauseget2') ->> 'id'");
is($out, 'pauseget2', 'after the pause a GET goes through');
ok($node->wait_for_log(qr/Billogram answers again; sending resumes/),
	'its answer, as the probe, ends the pause');
($state, $out) = BgTest::call($node,
	"SELECT billogram_credit_payment('pausepay1', 'amount', 1) ->> 'remaining_sum'");
is($out, '-999.00', 'and payments go again');

# --- cancel: the wait ends at once, and nothing is said of money ---
$t0 = time;
($state, undef, $err) = BgTest::call($node,
	"SET statement_timeout = 300; SELECT billogram_get_invoice('slow2000cg')");
$took = time - $t0;
is($state, '57014', 'statement_timeout cancels a GET');
ok($took < 1.5, sprintf('at once (%.2f s)', $took));
unlike($err, qr/WARNING|NOTICE/, 'with no warning or notice about what was sent');
# the mock answers after 2 s; the worker drops the reply quietly
usleep(2_500_000);
is(gets('slow2000cg'), 1, 'the GET was sent once');
ok(!$node->log_contains(qr/(GET of invoice|caller of the [^;]*) slow2000cg/),
	'the worker logs nothing of it');
($state, $out) = BgTest::call($node, "SELECT billogram_get_invoice('slow2000cg') ->> 'id'");
is($out, 'slow2000cg', 'and the same GET can simply be made again');

# --- GETs and payments at once: each answered, only payments journaled ---
my @runs;
for my $i (1 .. 12)
{
	my $sql = $i % 2
	  ? "SELECT billogram_get_invoice('mixg$i') ->> 'id'"
	  : "SELECT billogram_credit_payment('mixp$i', 'amount', 2.50) ->> 'id'";
	push @runs, BgTest::start_psql($node, $sql);
}
$_->{h}->finish for @runs;
my @errors = grep { $_->{err} ne '' } @runs;
is(scalar @errors, 0, 'no call of the burst failed')
  or diag(join "\n", map { $_->{err} } @errors);
is(join(',', sort map { $_->{out} =~ s/\s+$//r } @runs),
	join(',', sort map { $_ % 2 ? "mixg$_" : "mixp$_" } 1 .. 12),
	'each call got its own invoice');
is($node->safe_psql('postgres',
	"SELECT string_agg(billogram_id || '=' || state, ',' ORDER BY billogram_id COLLATE \"C\") FROM billogram_requests WHERE billogram_id LIKE 'mix%'"),
	join(',', map { "mixp$_=done" } sort map { $_ * 2 } 1 .. 6),
	'the payments, and only they, are journaled, done');
is_deeply($mock->post_counts(qr/^mix/), { map { ("mixp" . $_ * 2 => 1) } 1 .. 6 },
	'each payment sent once');
is(scalar(grep { $_->{method} eq 'GET' && $_->{id} =~ /^mixg/ } @{ $mock->requests }), 6,
	'each GET sent once');

$node->stop;
$mock->stop;
done_testing();
