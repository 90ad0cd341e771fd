# The ledger: every verdict on an unknown outcome rests on what the
# extension itself recorded of the invoice (the baseline fixed on the row
# when it was claimed, the event uuids each reply and reading showed),
# never on Billogram's clock, never on whichever journal row survives.
# Issue 19's routes 1 to 4 and 8, each as the auditor who found it tried it.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = BgTest->start_mock;
my $node = $mock->new_node('ledger', extra => "billogram.settle_time = '3s'\n");
BgTest::worker_pid($node);

sub query { return $node->safe_psql('postgres', $_[0]); }

# The newest row of invoice $id once its verdict is final (settle_at NULL).
sub settled_row
{
	my ($id) = @_;
	my $newest = "FROM billogram_requests WHERE id = "
	  . "(SELECT max(id) FROM billogram_requests WHERE billogram_id = '$id')";
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 $newest AND state IN ('done', 'in_doubt') "
		  . "AND settle_at IS NULL AND evidence IS NOT NULL")
	  or die "the row of $id was not settled";
	return decode_json(query(
		"SELECT json_build_object('id', id, 'state', state, 'verdict', evidence->>'verdict', "
		  . "'evidence', evidence, 'event_uuids', event_uuids) $newest"));
}

# What the mock applied to the invoice and what the journal says is done:
# the books of one invoice balance when both lists are the same.
sub books
{
	my ($id) = @_;
	my $mock_side = join ',', sort map { 0 + $_->{amount} }
	  grep { defined $_->{seq} } @{ $mock->invoice($id)->{payments} };
	my $journal_side = query(
		"SELECT coalesce(string_agg(coalesce(amount, 0)::float8::text, ',' ORDER BY amount), '') "
		  . "FROM billogram_requests WHERE billogram_id = '$id' AND state = 'done'");
	return ($mock_side, $journal_side);
}

sub mock_clock { $mock->_ctl('POST', '/clock', $_[0]); }

# --- route 1: Billogram's clock two minutes behind ours, first payment ---
mock_clock('{"offset_s":-120}');
my ($state) = BgTest::call($node, "SELECT billogram_credit_payment('a500ck1', 'amount', 250)");
is($state, 'BG500', 'a 500 after the payment was applied');
my $row = settled_row('a500ck1');
is($row->{verdict}, 'applied', "clock 2 min behind: applied, whatever the event's time says");
is($row->{state}, 'done', 'and done');
is(scalar @{ $row->{event_uuids} }, 1, 'the row knows its event');
is($row->{event_uuids}[0], $mock->invoice('a500ck1')->{events}[-1]{event_uuid},
	'the one Billogram made for it');
($state) = BgTest::call($node,
	"SELECT billogram_resolve(id, 'resend') FROM billogram_requests WHERE billogram_id = 'a500ck1'");
is($state, '55000', 'a done row cannot be resent');
is(scalar @{ $mock->posts('a500ck1') }, 1, 'paid once');

# offset-less times, and the clock ahead: the same
mock_clock('{"offset_s":300,"naive":true}');
query("SET TimeZone = 'Pacific/Kiritimati'; SELECT billogram_enqueue_credit_payment('adropck2', 'remaining')");
is(settled_row('adropck2')->{verdict}, 'applied',
	'clock 5 min ahead, times without a zone, remaining mode: applied');
mock_clock('{"offset_s":0}');

# a payment that did not arrive, clock behind: not applied, and a resend
# pays it once
mock_clock('{"offset_s":-120}');
BgTest::call($node, "SELECT billogram_credit_payment('ndropck3', 'amount', 40)");
$row = settled_row('ndropck3');
is($row->{verdict}, 'not_applied', 'dropped before applying, clock behind: not applied');
query("SELECT billogram_resolve($row->{id}, 'resend')");
$node->poll_query_until('postgres',
	"SELECT state = 'in_doubt' AND settle_at IS NULL FROM billogram_requests WHERE id = $row->{id}");
is(scalar @{ $mock->posts('ndropck3') }, 2, 'the resend went once');
mock_clock('{"offset_s":0}');

# --- route 2: baselines are the row's own, fixed at its claim ---
# (a) a done payment, then a 500 that applied nothing: the earlier
# payment's event is in the later row's baseline, so nothing is new
BgTest::call($node, "SELECT billogram_credit_payment('base2a', 'amount', 100)");
$mock->fault('{"mode":"status","status":500,"count":1}');
($state) = BgTest::call($node, "SELECT billogram_credit_payment('base2a', 'amount', 100)");
is($state, 'BG500', 'the second call got a 500 that applied nothing');
$row = settled_row('base2a');
is($row->{verdict}, 'not_applied', 'the earlier payment is not taken for this one');
is(join(',', books('base2a')), '100,100', 'the books balance: one payment done, one applied');

# the same with two queued payments, claimed one after the other in
# batches that also record outcomes
query("BEGIN; SELECT billogram_enqueue_credit_payment('a500q2', 'amount', 10); "
	  . "SELECT billogram_enqueue_credit_payment('a500q2', 'amount', 20); COMMIT");
BgTest::wait_settled($node);
$node->poll_query_until('postgres',
	"SELECT bool_and(state = 'done') FROM billogram_requests WHERE billogram_id = 'a500q2'");
is(query("SELECT string_agg(evidence->'new_events'->0->>'amount', ',' ORDER BY id) "
		  . "FROM billogram_requests WHERE billogram_id = 'a500q2'"),
	'10.00,20.00', 'each of two 500s after applying is reconciled with its own payment');

# (b) billogram.journal_reply = 'none': nothing of the invoice in the
# journal, the ledger still knows it
query("ALTER SYSTEM SET billogram.journal_reply = 'none'");
query("SELECT pg_reload_conf()");
sleep 1;
BgTest::call($node, "SELECT billogram_credit_payment('a500n2b', 'amount', 100)");
settled_row('a500n2b');
BgTest::call($node, "SELECT billogram_credit_payment('a500n2b', 'amount', 100)");
$row = settled_row('a500n2b');
is($row->{verdict}, 'applied', "journal_reply = 'none': the second 500 is still settled from the ledger");
is(scalar @{ $row->{evidence}{new_events} }, 1, 'with only its own payment as new');
is(query("SELECT count(*) FROM billogram_requests WHERE billogram_id = 'a500n2b' AND response IS NOT NULL"),
	'0', 'and nothing of the invoice kept in the journal');
query("ALTER SYSTEM RESET billogram.journal_reply");
query("SELECT pg_reload_conf()");

# what the mock applied is what the journal has done (before the purge)
for my $id (qw(a500ck1 base2a a500n2b))
{
	my ($m, $j) = books($id);
	is($j, $m, "the books of $id balance");
}

# (c) billogram_purge of every finished row: the ledger stays
BgTest::call($node, "SELECT billogram_credit_payment('a500p2c', 'amount', 70)");
settled_row('a500p2c');
query("SELECT billogram_purge('0 seconds')");
is(query("SELECT count(*) FROM billogram_requests WHERE billogram_id = 'a500p2c'"),
	'0', 'purged');
BgTest::call($node, "SELECT billogram_credit_payment('a500p2c', 'amount', 70)");
$row = settled_row('a500p2c');
is($row->{verdict}, 'applied', 'after a purge the next 500 is settled from the ledger');
is(scalar @{ $row->{evidence}{new_events} }, 1, 'the purged payment is not counted again');

# --- route 3: a callback does not reopen a final verdict ---
query("ALTER SYSTEM SET billogram.callback_sign_key_file = '"
	  . $mock->secret_file('tap-sign-key') . "'");
query("SELECT pg_reload_conf()");
$node->poll_query_until('postgres',
	"SELECT billogram_verify_callback('0', 'x', '{}') IS NOT NULL", 't');
my $q = sub { my $v = shift; $v =~ s/'/''/g; "'$v'" };
sub deliver_callback
{
	my ($cb) = @_;
	return query("SELECT billogram_record_callback("
		  . join(', ', map { $q->($cb->{$_}) } qw(timestamp signature body)) . ")");
}
# our payment of 300 fails with a 500 that applied nothing (not_applied,
# final); our next payment of 300 on the invoice goes through, and
# Billogram calls back about its event
BgTest::call($node, "SELECT billogram_credit_payment('cb3', 'amount', 1)");
$mock->fault('{"mode":"status","status":500,"count":1}');
BgTest::call($node, "SELECT billogram_credit_payment('cb3', 'amount', 300)");
my $first = settled_row('cb3');
is($first->{verdict}, 'not_applied', 'a payment of 300 did not arrive');
($state) = BgTest::call($node, "SELECT billogram_credit_payment('cb3', 'amount', 300)");
is($state, '', 'the next payment of 300 went through');
is(deliver_callback($mock->signed_callback('cb3', 'tap-sign-key')), 'recorded',
	"Billogram's callback about it is recorded");
sleep 2;
is(query("SELECT state || ':' || (evidence->>'verdict') || ':' || (settle_at IS NULL) "
		  . "FROM billogram_requests WHERE id = $first->{id}"),
	'in_doubt:not_applied:true', 'the callback did not reopen the final verdict');

# the same while the first row is still in_doubt with its final verdict
BgTest::call($node, "SELECT billogram_credit_payment('ndrop3b', 'amount', 300)");
$first = settled_row('ndrop3b');
$mock->pay_elsewhere('ndrop3b', '300.00');
deliver_callback($mock->signed_callback('ndrop3b', 'tap-sign-key'));
sleep 2;
is(query("SELECT state || ':' || (evidence->>'verdict') || ':' || (settle_at IS NULL) FROM billogram_requests WHERE id = $first->{id}"),
	'in_doubt:not_applied:true', "someone else's payment of the same amount does not reconcile a final not_applied row");

# --- route 4: resend only after a fresh reading, and only for not_applied ---
($state, undef, my $err) = BgTest::call($node, "SELECT billogram_resolve($first->{id}, 'resend')");
is($state, '', 'resend of a not_applied row is accepted');
$node->poll_query_until('postgres',
	"SELECT state = 'in_doubt' FROM billogram_requests WHERE id = $first->{id}");
$row = settled_row('ndrop3b');
is($row->{verdict}, 'ambiguous', 'the fresh reading shows a payment nobody accounted for: not resent');
is(scalar @{ $mock->posts('ndrop3b') }, 1, 'sent once only');
($state, undef, $err) = BgTest::call($node, "SELECT billogram_resolve($first->{id}, 'resend')");
is($state, '55000', 'an ambiguous row cannot be resent');
like($err, qr/mark_done or mark_failed/, 'the hint names what to do');
like(query("SELECT advice FROM billogram_in_doubt WHERE id = $first->{id}"),
	qr/^ambiguous: the resend was not made.*mark_done.*mark_failed/,
	'billogram_in_doubt says why, and what to do');

# no baseline at all (a row from before 0.3): never applied, never not_applied
query("INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body, state, "
	  . "sent_at, finished_at, settle_at) VALUES ('enqueue', 'nobase1', 'amount', 5, "
	  . "'{\"mode\":\"amount\",\"amount\":5}', 'in_doubt', now(), now(), now())");
query("SELECT billogram_wake_worker_at_commit()");
$row = settled_row('nobase1');
is($row->{verdict}, 'ambiguous', 'a row without a baseline is ambiguous, whatever the invoice shows');

my ($m, $j) = books('cb3');
is($j, $m, 'the books of cb3 balance');

$node->stop;
$mock->stop;
done_testing();
