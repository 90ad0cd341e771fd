# What happens when an outcome is unknown: the worker reads the invoice
# again and settles the row from the evidence, never by guessing.  A
# payment the invoice shows applied becomes done ('reconciled'); one it
# shows did not arrive stays in_doubt until an operator resends it, once;
# anything else (someone else paid meanwhile) stays in_doubt.  And one
# payment per invoice is in flight at a time, in order.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mock = BgTest->start_mock;
my $node = $mock->new_node('settle', extra => "billogram.settle_time = '3s'\n");
BgTest::worker_pid($node);

sub query { return $node->safe_psql('postgres', $_[0]); }

# The newest row of invoice $id, once its verdict is final (settle_at NULL).
sub settled_row
{
	my ($id) = @_;
	my $newest = "FROM billogram_requests WHERE id = "
	  . "(SELECT max(id) FROM billogram_requests WHERE billogram_id = '$id')";
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 $newest "
		  . "AND state IN ('done', 'in_doubt') AND settle_at IS NULL AND evidence IS NOT NULL")
	  or die "the row of $id was not settled";
	return decode_json(query(
		"SELECT json_build_object('state', state, 'verdict', evidence->>'verdict', "
		  . "'reconciled', resolution ~ '^reconciled', 'evidence', evidence) $newest"));
}

sub new_amounts
{
	my ($row) = @_;
	return join ',', map { 0 + $_->{amount} } grep { defined $_->{amount} }
	  @{ $row->{evidence}{new_events} };
}

# --- 500 after the payment was applied: reconciled ---
my ($state) = BgTest::call($node,
	"SELECT billogram_credit_payment('a500s1', 'amount', 250)");
is($state, 'BG500', 'the caller is told the 500');
my $row = settled_row('a500s1');
is($row->{state}, 'done', '500 after apply: the row is done');
ok($row->{reconciled}, 'its resolution says reconciled');
is($row->{verdict}, 'applied', 'the verdict is applied');
is(new_amounts($row), '250', 'the evidence is the one new payment of 250');
is(0 + $row->{evidence}{remaining_after}, -750, 'and the remaining sum after it');
is(scalar @{ $mock->posts('a500s1') }, 1, 'it was sent once');

# the same for a queued 'remaining' payment dropped after it was applied
query("SELECT billogram_enqueue_credit_payment('adropq1', 'remaining')");
$row = settled_row('adropq1');
is($row->{state}, 'done', 'remaining, dropped after apply: done');
is($row->{verdict}, 'applied', 'applied: one payment of the whole sum, nothing left');
is(new_amounts($row), '1000', 'the payment of the whole remaining sum');

# --- with history: the invoice had payments before the request ---
# Someone else paid before our first payment: the worker read the invoice
# before it (the ledger knew nothing of it), so that payment is in the
# baseline and ours alone is new.
$mock->pay_elsewhere('a500h1', '100.00');
BgTest::call($node, "SELECT billogram_credit_payment('a500h1', 'amount', 250)");
$row = settled_row('a500h1');
is($row->{verdict}, 'applied', 'with history: applied');
is(0 + $row->{evidence}{remaining_before}, -900, 'compared with the invoice as read before the payment');
is(new_amounts($row), '250', 'the earlier payment is not counted as new');
is(scalar(grep { $_->{method} eq 'GET' } @{ $mock->requests('a500h1') }) >= 2, 1,
	'the invoice was read before its first payment, and again after the 500');

# someone else pays after our last reply and before our next payment: two
# new payments, ambiguous
BgTest::call($node, "SELECT billogram_credit_payment('a500h2', 'amount', 100)");
is(settled_row('a500h2')->{verdict}, 'applied', 'our earlier payment: applied');
$mock->pay_elsewhere('a500h2', '250.00');
BgTest::call($node, "SELECT billogram_credit_payment('a500h2', 'amount', 250)");
$row = settled_row('a500h2');
is($row->{state}, 'in_doubt', 'someone else paid meanwhile: still in_doubt');
is($row->{verdict}, 'ambiguous', 'the verdict is ambiguous');
is(new_amounts($row), '250,250', 'the evidence shows both payments');

# --- dropped before it was applied: not applied, resent once on demand ---
($state) = BgTest::call($node,
	"SELECT billogram_credit_payment('ndrops1', 'amount', 100)");
is($state, 'BG000', 'the caller is told there was no reply');
$node->poll_query_until('postgres',
	"SELECT evidence IS NOT NULL FROM billogram_requests WHERE billogram_id = 'ndrops1'");
is(query("SELECT evidence->>'verdict' FROM billogram_requests WHERE billogram_id = 'ndrops1'"),
	'checking', 'before billogram.settle_time: still checking');
$row = settled_row('ndrops1');
is($row->{state}, 'in_doubt', 'not applied: stays in_doubt');
is($row->{verdict}, 'not_applied', 'the verdict is not_applied');
is(new_amounts($row), '', 'no new payment on the invoice');
like(query("SELECT advice FROM billogram_in_doubt WHERE billogram_id = 'ndrops1'"),
	qr/^not registered: .* billogram_resolve\(\d+, 'resend'\) sends it again once a fresh reading shows the invoice unchanged$/,
	'billogram_in_doubt says so, and how to resend');
sleep 1;
is(scalar @{ $mock->posts('ndrops1') }, 1, 'it is never resent on its own');
query("SELECT billogram_resolve(id, 'resend') FROM billogram_requests WHERE billogram_id = 'ndrops1'");
BgTest::wait_settled($node);
$node->poll_query_until('postgres',
	"SELECT state = 'in_doubt' FROM billogram_requests WHERE billogram_id = 'ndrops1'");
sleep 1;
is(scalar @{ $mock->posts('ndrops1') }, 2, 'resend sends it once more, once');

# --- a row being checked is read at its settle_at, not at the next sweep ---
# billogram.settle_time is 3 s: the reading that ends "checking" is due 3 s
# after the request ended (a dropped one ends at once), and is made then;
# the sweep would come 10 s after the first reading.
BgTest::call($node, "SELECT billogram_credit_payment('ndropt1', 'amount', 100)");
$row = settled_row('ndropt1');
is($row->{verdict}, 'not_applied', 'a dropped payment, read again until settle_time: not applied');
my ($sent) = map { $_->{time} } @{ $mock->posts('ndropt1') };
my @reads = map { $_->{time} } grep { $_->{method} eq 'GET' && $_->{time} > $sent }
  @{ $mock->requests('ndropt1') };
note('readings after sending at: ' . join(', ', map { sprintf('%.2f s', $_ - $sent) } @reads));
cmp_ok(scalar @reads, '>=', 2, 'its invoice was read while checking, then for the verdict');
cmp_ok($reads[-1] - $sent, '<', 6,
	sprintf('the last reading came at settle_time after the request ended, not at a sweep (%.1f s)',
		$reads[-1] - $sent));

# --- settle_time counts from when the request ended, not from when it left ---
# The caller's billogram.timeout (2 s) is up before "Billogram" answers: it
# holds the payment 4 s (a global slow fault), then applies it.  Counted
# from sending, the 3 s of settle_time were over before that (not_applied
# at 3 s, and a double payment on a resend: found by the chaos run, a
# worker killed while the mock held a payment); counted from the end of
# the request, the verdict waits until 5 s and finds the payment.  The
# invoice is paid once first, so that no reading of it precedes the
# payment held.
($state) = BgTest::call($node, "SELECT billogram_credit_payment('lateapply1', 'amount', 10)");
is($state, '', 'a first payment on the invoice');
$mock->fault('{"mode":"slow","ms":4000}');
($state) = BgTest::call($node,
	"SET billogram.timeout = '2s'; SELECT billogram_credit_payment('lateapply1', 'amount', 40)");
$mock->fault('{"mode":"none"}');
is($state, 'BG000', 'a payment whose reply comes after the timeout: no reply');
$row = settled_row('lateapply1');
is($row->{verdict}, 'applied', 'applied after the timeout: found, not concluded not_applied');
is($row->{state}, 'done', 'and the row is done');
is(scalar @{ $mock->posts('lateapply1') }, 2, 'each payment sent once');

# --- one payment per invoice in flight, in order ---
# two 'remaining' payments queued together: the second leaves only once the
# first is answered, and finds nothing left
query("SELECT billogram_enqueue_credit_payment('slow400r1', 'remaining') FROM generate_series(1, 2)");
BgTest::wait_settled($node);
my @posts = @{ $mock->posts('slow400r1') };
is(scalar @posts, 2, 'both queued remaining payments were sent');
cmp_ok($posts[1]{time} - $posts[0]{time}, '>=', 0.4,
	'the second left only after the first was answered');
is(query("SELECT string_agg(state || ':' || coalesce(http_status, 0), ',' ORDER BY id) "
		  . "FROM billogram_requests WHERE billogram_id = 'slow400r1'"),
	'done:200,failed:400', 'the first paid the whole sum; the second found nothing left');

# the same for two synchronous calls from two sessions at once
my @runs = map {
	BgTest::start_psql($node,
		"SELECT billogram_credit_payment('slow400s1', 'remaining')->>'state'")
} 1 .. 2;
$_->{h}->finish for @runs;
my @answers = sort map {
	$_->{out} =~ /(\w+)/ ? $1 : $_->{err} =~ /(INVALID_OBJECT_STATE)/ ? $1 : 'other'
} @runs;
is_deeply(\@answers, [ 'INVALID_OBJECT_STATE', 'Paid' ],
	'two concurrent calls: one paid, the other found nothing left');
@posts = @{ $mock->posts('slow400s1') };
cmp_ok($posts[1]{time} - $posts[0]{time}, '>=', 0.4,
	'the second call was sent only after the first was answered');

# calls one after the other on one invoice: each goes as soon as the one
# before it is over, not when its own timeout comes (55006)
my ($seqstate, $seqout) = BgTest::call($node,
	"SET billogram.timeout = '500ms'; SELECT count(*) FROM generate_series(1, 20) g, "
	  . "LATERAL billogram_credit_payment('seqinv1', 'amount', 1) p");
is($seqstate . $seqout, '20', 'twenty calls in a row on one invoice, 500 ms each at most, all went through');

# a call on an invoice being settled waits for its turn, then is refused
# when its timeout comes first, with nothing sent
query("UPDATE billogram_requests SET settle_at = now() + interval '1 hour', state = 'in_doubt' "
	  . "WHERE billogram_id = 'ndrops1'");
query("SELECT billogram_wake_worker_at_commit()");
usleep(300_000);
($state, undef, my $err) = BgTest::call($node,
	"SET billogram.timeout = '1s'; SELECT billogram_credit_payment('ndrops1', 'amount', 1)");
is($state, '55006', 'a call on an invoice being settled is refused when its time is up');
like($err, qr/was not sent/, 'and told it was not sent');
is(scalar @{ $mock->posts('ndrops1') }, 2, 'nothing more was sent');
query("SELECT billogram_resolve(id, 'mark_failed') FROM billogram_requests WHERE billogram_id = 'ndrops1'");
($state) = BgTest::call($node,
	"SELECT billogram_credit_payment('ndrops1', 'amount', 1)");
is($state, 'BG000', 'once resolved, the invoice takes payments again');

# --- callbacks feed the evidence ---
query("ALTER SYSTEM SET billogram.callback_sign_key_file = '"
	  . $mock->secret_file('tap-sign-key') . "'");
query("SELECT pg_reload_conf()");
$node->poll_query_until('postgres',
	"SELECT billogram_verify_callback('0', 'x', '{}') IS NOT NULL", 't');
$mock->pay_elsewhere('cbinv1', '10.00');
for my $enc ('hex', 'base64')
{
	my $cb = $mock->signed_callback('cbinv1', 'tap-sign-key', encoding => $enc);
	my $q = sub { my $v = shift; $v =~ s/'/''/g; "'$v'" };
	my $sql = "SELECT billogram_record_callback("
	  . join(', ', map { $q->($cb->{$_}) } qw(timestamp signature body)) . ")";
	is(query($sql), $enc eq 'hex' ? 'recorded' : 'duplicate',
		"a callback signed by the mock ($enc) is accepted, its event recorded once");
}
is(query("SELECT count(*) || ' ' || min(amount) FROM billogram_events WHERE billogram_id = 'cbinv1'"),
	'1 10.00', 'one event, with its amount');

sub record_callback
{
	my ($cb) = @_;
	my $q = sub { my $v = shift; $v =~ s/'/''/g; "'$v'" };
	return BgTest::call($node, "SELECT billogram_record_callback("
		  . join(', ', map { $q->($cb->{$_}) } qw(timestamp signature body)) . ")");
}
$mock->pay_elsewhere('cbinv1', '20.00');
my $cb = $mock->signed_callback('cbinv1', 'tap-sign-key');
my ($cbstate, $cbout) = record_callback($cb);
is($cbstate . $cbout, "recorded", 'a new event: recorded');
($cbstate, $cbout) = record_callback($cb);
is($cbstate . $cbout, "duplicate", 'the same callback replayed: recorded once');
($cbstate) = record_callback({ %$cb, body => $cb->{body} =~ s/20\.00/2000.00/r });
is($cbstate, '28000', 'a body changed after signing is refused');
($cbstate) = record_callback($mock->signed_callback('cbinv1', 'another-key-0123'));
is($cbstate, '28000', 'a callback signed with another key is refused');
($cbstate) = record_callback($mock->signed_callback('cbinv1', 'tap-sign-key',
		timestamp => sprintf('%.6f', time - 600)));
is($cbstate, '28000', 'a callback 10 minutes old is refused');
is(query("SELECT count(*) FROM billogram_events WHERE billogram_id = 'cbinv1'"),
	'2', 'nothing refused was recorded');

# a callback never reopens a final verdict; the resend it would have made
# unsafe is refused by the fresh reading instead: someone else's payment
# since "not applied" leaves the row in_doubt, ambiguous, and unsent
BgTest::call($node, "SELECT billogram_credit_payment('ndropcb1', 'amount', 100)");
is(settled_row('ndropcb1')->{verdict}, 'not_applied', 'a dropped payment: not applied');
$mock->pay_elsewhere('ndropcb1', '5.00');
($cbstate, $cbout) = record_callback($mock->signed_callback('ndropcb1', 'tap-sign-key'));
is($cbout, "recorded", 'a callback reports a payment on that invoice');
is(query("SELECT settle_at IS NULL AND evidence->>'verdict' = 'not_applied' "
		  . "FROM billogram_requests WHERE billogram_id = 'ndropcb1'"),
	't', 'the final verdict is not reopened');
query("SELECT billogram_resolve(id, 'resend') FROM billogram_requests WHERE billogram_id = 'ndropcb1'");
$node->poll_query_until('postgres',
	"SELECT state = 'in_doubt' FROM billogram_requests WHERE billogram_id = 'ndropcb1'");
my $fed = settled_row('ndropcb1');
is($fed->{verdict}, 'ambiguous', 'the resend read the invoice: changed, so ambiguous');
is(new_amounts($fed), '5', 'with the payment nobody accounted for');
is(scalar @{ $mock->posts('ndropcb1') }, 1, 'and nothing was resent');

done_testing();
