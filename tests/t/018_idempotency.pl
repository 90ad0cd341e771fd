# Idempotency keys and what the caller is told (issue 19, route 10).
#
# A key pays at most once, ever: a repeated key answers what the journal
# recorded (the invoice, the same error, "in progress" or "unknown"), a key
# reused for another payment is refused, two sessions racing on one key make
# one payment, a key outlives billogram_purge.  A payment whose invoice the
# caller's database cannot hold (LATIN1, \u0000) says that it was registered
# and names its journal row, and a call cancelled while the journal was
# locked is told truthfully that nothing was sent.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mock = BgTest->start_mock;
my $node = $mock->new_node('idempotency', extra => "billogram.max_connections = 4\n");
BgTest::worker_pid($node);

sub posts { my ($id) = @_; return scalar @{ $mock->posts($id) }; }

sub sql { my ($q) = @_; return $node->safe_psql('postgres', $q); }

# ---------------------------------------------------------------------
# A key after a payment that was registered: the same invoice, nothing sent
# ---------------------------------------------------------------------
my ($state, $out, $err) = BgTest::call($node,
	"SELECT inv->>'remaining_sum' FROM billogram_credit_payment('idem1', 'amount', 10, 'key-idem1') AS inv");
is($state, '', 'a call with a key pays');
is($out, '-990.00', 'and returns the invoice');
my $row = sql("SELECT id FROM billogram_requests WHERE billogram_id = 'idem1'");
is(sql("SELECT request_id FROM billogram_keys WHERE kind = 'call' AND key = 'key-idem1'"),
	$row, 'the key is recorded with the row it paid');
is(sql("SELECT idempotency_key FROM billogram_requests WHERE id = $row"), 'key-idem1',
	'and on the row');

($state, $out, $err) = BgTest::call($node,
	"SELECT inv->>'remaining_sum' FROM billogram_credit_payment('idem1', 'amount', 10, 'key-idem1') AS inv");
is($state, '', 'the same call again succeeds');
is($out, '-990.00', 'with the invoice the first call recorded');
like($err, qr/NOTICE:.*key-idem1.*request $row.*nothing was sent/,
	'a NOTICE says the recorded invoice is returned and nothing was sent');
is(posts('idem1'), 1, 'one payment reached Billogram');

# the same key for another payment: refused, nothing sent
for my $args ("'idem1', 'amount', 11", "'idem2', 'amount', 10", "'idem1', 'remaining', NULL")
{
	($state, undef, $err) = BgTest::call($node,
		"SELECT billogram_credit_payment($args, 'key-idem1')");
	is($state, '22023', "key-idem1 reused for ($args) is refused with 22023");
}
like($err, qr/idempotency key "key-idem1" was already used for a different payment/,
	'saying the key was used for another payment');
($state) = BgTest::call($node,
	"SELECT billogram_enqueue_credit_payment('idem2', 'amount', 10, 'key-idem1')");
is($state, '22023', 'by enqueue too: keys are one namespace');
is(posts('idem1') + posts('idem2'), 1, 'and nothing more was sent');

# ---------------------------------------------------------------------
# A key after a failure: the same error, naming the request
# ---------------------------------------------------------------------
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('e400idem', 'amount', 10, 'key-e400')");
is($state, 'BG400', 'a refused payment with a key fails with BG400');
my $failed = sql("SELECT id FROM billogram_requests WHERE billogram_id = 'e400idem'");
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('e400idem', 'amount', 10, 'key-e400')");
is($state, 'BG400', 'repeated, it fails with the same SQLSTATE');
like($err, qr/failed before: Invalid amount/, 'and the recorded message');
like($err, qr/Request $failed of billogram_requests, made with this key, failed; nothing was sent now/,
	'naming the request');
is(posts('e400idem'), 1, 'sent once');

# ---------------------------------------------------------------------
# A key whose payment is in doubt: "outcome unknown", never sent again
# ---------------------------------------------------------------------
($state) = BgTest::call($node,
	"SELECT billogram_credit_payment('e500idem', 'amount', 10, 'key-e500')");
is($state, 'BG500', 'a payment answered 500 is in doubt');
my $doubt = sql("SELECT id FROM billogram_requests WHERE billogram_id = 'e500idem'");
like($err = (BgTest::call($node,
	"SELECT billogram_credit_payment('e500idem', 'amount', 10, 'key-e500')"))[2],
	qr/ERROR:  BG004: the outcome of the credit payment on e500idem with idempotency key "key-e500" is unknown, see billogram_in_doubt/,
	'repeated, it gets BG004: outcome unknown, see billogram_in_doubt');
like($err, qr/Request $doubt of billogram_requests, made with this key, is in_doubt/,
	'naming the request and its state');
is(posts('e500idem'), 1, 'sent once');

# ---------------------------------------------------------------------
# Two sessions racing on one key: one payment
# ---------------------------------------------------------------------
my @racers = map {
	BgTest::start_psql($node,
		"SELECT inv->>'id' FROM billogram_credit_payment('slow800race', 'amount', 5, 'key-race') AS inv")
} 1 .. 2;
$_->{h}->finish for @racers;
is(posts('slow800race'), 1, 'two sessions racing on one key: one POST at the mock');
my $paid = grep { $_->{out} =~ /slow800race/ } @racers;
my $told = grep { $_->{err} =~ /ERROR:  the credit payment on slow800race with idempotency key "key-race" is still in progress/ }
  @racers;
cmp_ok($paid, '>=', 1, 'one session got the invoice');
is($paid + $told, 2, 'the other the invoice too, or "still in progress"');
note("racer $_: out=[$racers[$_]{out}] err=[$racers[$_]{err}]") for 0 .. 1;
is(sql("SELECT count(*) FROM billogram_requests WHERE billogram_id = 'slow800race'"), '1',
	'one journal row');

# ---------------------------------------------------------------------
# enqueue with a key, twice: one request, one payment
# ---------------------------------------------------------------------
my $q1 = sql("SELECT billogram_enqueue_credit_payment('enqidem1', 'amount', 7, 'key-enq')");
my $q2 = sql("SELECT billogram_enqueue_credit_payment('enqidem1', 'amount', 7, 'key-enq')");
is($q2, $q1, 'enqueue with a key used before returns the first request\'s id');
ok(BgTest::wait_settled($node), 'the queue drains');
is(sql("SELECT count(*) || ' ' || min(state) FROM billogram_requests WHERE billogram_id = 'enqidem1'"),
	'1 done', 'one row, done');
is(posts('enqidem1'), 1, 'paid once');
($state, $out) = BgTest::call($node,
	"SELECT inv->>'remaining_sum' FROM billogram_credit_payment('enqidem1', 'amount', 7, 'key-enq') AS inv");
is("$state $out", ' -993.00', 'a synchronous call with the queued payment\'s key returns its recorded invoice');
is(posts('enqidem1'), 1, 'and sends nothing');

# ---------------------------------------------------------------------
# A key outlives billogram_purge
# ---------------------------------------------------------------------
cmp_ok(sql("SELECT billogram_purge('0 seconds')"), '>', 0, 'finished rows purged');
is(sql("SELECT count(*) FROM billogram_requests WHERE id = $row"), '0', 'the paid row is gone');
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('idem1', 'amount', 10, 'key-idem1')");
is($state, 'BG005', 'the key still refuses to pay again: BG005');
like($err, qr/Request $row was purged by billogram_purge\(\) once it had finished/,
	'saying the request was purged');
is(sql("SELECT billogram_enqueue_credit_payment('idem1', 'amount', 10, 'key-idem1')"), $row,
	'enqueue with it returns the purged request\'s id');
is(posts('idem1'), 1, 'still one payment');
is(sql("SELECT count(*) FROM billogram_requests WHERE billogram_id = 'idem1'"), '0',
	'and nothing was queued');

# ---------------------------------------------------------------------
# Route 10: an invoice the caller's database cannot hold
# ---------------------------------------------------------------------
sql("CREATE DATABASE lat ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$node->safe_psql('lat', 'CREATE EXTENSION billogram');

sub call_in
{
	my ($db, $q) = @_;
	my ($o, $e) = ('', '');
	$node->psql($db, "\\set VERBOSITY verbose\n$q", stdout => \$o, stderr => \$e);
	my ($s) = $e =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($s // '', $o, $e);
}

($state, $out) = call_in('lat',
	"SELECT inv->>'remaining_sum' FROM billogram_credit_payment('latok1', 'amount', 1) AS inv");
is("$state $out", ' -999.00', 'from a LATIN1 database an ordinary payment works');

($state, undef, $err) = call_in('lat',
	"SELECT billogram_credit_payment('latx1', 'amount', 1, 'key-latx1')");
my $latx = sql("SELECT id FROM billogram_requests WHERE billogram_id = 'latx1'");
is($state, '22P05', 'an invoice with characters LATIN1 lacks: 22P05');
like($err, qr/the credit payment on latx1 was registered, but its invoice cannot be returned in this database/,
	'saying the payment was registered');
like($err, qr/row $latx of billogram_requests in database "postgres" records it/,
	'naming its journal row');
like($err, qr/HINT:  Do not pay again/, 'and not to pay again');
ok($node->poll_query_until('postgres', "SELECT state = 'done' FROM billogram_requests WHERE id = $latx"),
	'the row says done');
($state, $out, $err) = call_in('lat',
	"SELECT inv->>'remaining_sum' FROM billogram_credit_payment('latx1', 'amount', 1, 'key-latx1') AS inv");
is("$state $out", ' -999.00', 'a retry with the same key returns the recorded invoice');
is(posts('latx1'), 1, 'and pays nothing more');

# the scanner refuses a reply with \u0000 as unusable (BG001): the caller
# hears the payment may be registered, with its row, which the worker
# settles from the invoice
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('latnul1', 'amount', 1)");
my $latnul = sql("SELECT id FROM billogram_requests WHERE billogram_id = 'latnul1'");
is($state, 'BG001', 'an invoice with \\u0000: BG001');
like($err, qr/the payment may be registered.*Row $latnul of billogram_requests records it/,
	'saying the payment may be registered, naming its row');
ok($node->poll_query_until('postgres', "SELECT state = 'done' FROM billogram_requests WHERE id = $latnul"),
	'the row ends done, settled from the invoice');
is(posts('latnul1'), 1, 'sent once');

# journal_reply = full: the worker keeps the whole invoice, the LATIN1
# caller still hears the payment was registered
sql("ALTER SYSTEM SET billogram.journal_reply = 'full'");
sql("SELECT pg_reload_conf()");
$node->poll_query_until('postgres', "SELECT current_setting('billogram.journal_reply') = 'full'");
($state, undef, $err) = call_in('lat', "SELECT billogram_credit_payment('latx2', 'amount', 1)");
is($state, '22P05', 'with journal_reply = full too, 22P05');
like($err, qr/latx2 was registered/, 'saying it was registered');
ok( $node->poll_query_until('postgres',
		"SELECT state = 'done' AND response ? 'attachment_content' FROM billogram_requests WHERE billogram_id = 'latx2'"),
	'the row says done, with the whole invoice');
sql("ALTER SYSTEM RESET billogram.journal_reply");
sql("SELECT pg_reload_conf()");

# ---------------------------------------------------------------------
# Route 10: cancelled while the journal was locked: "not sent" is true
# ---------------------------------------------------------------------
my ($lin, $lout, $lerr) = ('', '', '');
my $locker = IPC::Run::start(
	[ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres') ],
	'<', \$lin, '>', \$lout, '2>', \$lerr);
$lin .= "BEGIN; LOCK TABLE billogram_requests IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n";
my $timer = IPC::Run::timer(30);
$timer->start;
$locker->pump until $lout =~ /locked/ || $timer->is_expired;
like($lout, qr/locked/, 'another session holds ACCESS EXCLUSIVE on the journal');

my $caller = BgTest::start_psql($node,
	"SELECT billogram_credit_payment('lockcancel1', 'amount', 1)");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'billogram worker' AND wait_event_type = 'Lock'"),
	'the worker waits for the lock to journal the call');
sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%lockcancel1%' AND backend_type = 'client backend' AND pid <> pg_backend_pid()");
$caller->{h}->finish;
like($caller->{err}, qr/canceling statement due to user request/, 'the call is cancelled');
like($caller->{err}, qr/NOTICE:  the credit payment on lockcancel1 was not sent to Billogram/,
	'and told it was not sent');
unlike($caller->{err}, qr/had already been sent/, 'not that it had been sent');
$lin .= "ROLLBACK;\n\\q\n";
$locker->finish;
($state) = BgTest::call($node, "SELECT billogram_credit_payment('afterlock2', 'amount', 1)");
is($state, '', 'payments flow again once the lock is released');
is(posts('lockcancel1'), 0, 'the cancelled call was never sent');
is(sql("SELECT count(*) FROM billogram_requests WHERE billogram_id = 'lockcancel1' AND state <> 'failed'"),
	'0', 'and no row says it may have been');

$node->stop;
$mock->stop;
done_testing();
