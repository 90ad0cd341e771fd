# Load with faults: many sessions calling at once against an API that fails
# 10% of requests at random (500 pages, dropped connections, replies cut
# short, replies slower than the timeout).  Every call returns or raises a
# documented SQLSTATE within its timeout, the journal has exactly one row
# per call, and no payment reaches the mock twice.
#
# The size fits CI's time; BG_LOAD_SESSIONS and BG_LOAD_CALLS make it the
# issue's 50 x 200.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sessions = $ENV{BG_LOAD_SESSIONS} // 50;
my $calls = $ENV{BG_LOAD_CALLS} // 20;
my $timeout_ms = 1000;

my $mock = BgTest->start_mock;
my $node = $mock->new_node('load',
	extra => "max_connections = 100\nbillogram.timeout = $timeout_ms\n");
BgTest::worker_pid($node);
$node->safe_psql('postgres', q{
	CREATE TABLE outcomes (session int, n int, sqlstate text, ms float8, detail text);
});
$mock->fault('{"mode":"random","rate":0.1,"seed":7}');

my @runs;
for my $s (1 .. $sessions)
{
	my %r = (out => '', err => '');
	my $sql = <<"SQL";
DO \$\$
DECLARE
	st text;
	dt text;
	t0 timestamptz;
BEGIN
	FOR i IN 1 .. $calls LOOP
		t0 := clock_timestamp();
		BEGIN
			PERFORM billogram_credit_payment(format('L%sx%s', $s, i), 'amount', 1);
			st := 'ok';
			dt := NULL;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, dt = PG_EXCEPTION_DETAIL;
		END;
		INSERT INTO outcomes VALUES ($s, i, st,
			extract(epoch FROM clock_timestamp() - t0) * 1000, dt);
	END LOOP;
END
\$\$;
SQL
	$r{h} = IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$r{out}, '2>', \$r{err});
	push @runs, \%r;
}
$_->{h}->finish for @runs;
$mock->fault('{"mode":"none"}');

my @errors = grep { $_->{err} ne '' } @runs;
is(scalar @errors, 0, 'every session ran to its end')
  or diag(join "\n", map { $_->{err} } @errors[0 .. 2]);

my $total = $sessions * $calls;
is($node->safe_psql('postgres', 'SELECT count(*) FROM outcomes'), $total,
	"all $total calls returned or raised");
my $by_state = $node->safe_psql('postgres',
	"SELECT string_agg(sqlstate || '=' || n, ' ' ORDER BY sqlstate) FROM "
	  . "(SELECT sqlstate, count(*) AS n FROM outcomes GROUP BY 1) s");
note("outcomes: $by_state");
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM outcomes WHERE sqlstate !~ '^(ok|BG000|BG001|BG500|55006)\$'"),
	'0', 'each one a success or a documented failure: BG000, BG001, BG500, 55006 (its invoice not read in time)');
like($by_state, qr/ok=\d+/, 'most calls succeed');
like($by_state, qr/BG000=\d+/, 'and some met the injected faults');
my $slowest = $node->safe_psql('postgres', 'SELECT round(max(ms)) FROM outcomes');
note("slowest call: $slowest ms (billogram.timeout = $timeout_ms ms)");
cmp_ok($slowest, '<', $timeout_ms + 1000, 'no call waited past its timeout (queueing for a connection included)')
  or diag($node->safe_psql('postgres',
	"SELECT format('L%sx%s', o.session, o.n), o.sqlstate, round(o.ms), r.state, r.sent_at - r.created_at, "
	  . "r.finished_at - r.created_at, r.error->>'message' FROM outcomes o LEFT JOIN billogram_requests r "
	  . "ON r.billogram_id = format('L%sx%s', o.session, o.n) ORDER BY o.ms DESC LIMIT 5"));

ok(BgTest::wait_settled($node), 'the journal settles');
# every call that may have been sent has exactly one row; a call told that
# no payment was registered has none (refused before anything was sent:
# its invoice could not be read in time before its first payment), or a
# failed one (its time ran out waiting for a connection)
my $told = "coalesce(o.detail, '') LIKE '%no payment was registered%'";
my $rows = "(SELECT count(*) FROM billogram_requests r WHERE r.origin = 'sync' "
  . "AND r.billogram_id = format('L%sx%s', o.session, o.n)";
is($node->safe_psql('postgres',
		"SELECT count(*) FROM outcomes o WHERE NOT $told AND $rows) <> 1"),
	'0', 'the journal has exactly one row per call that may have been sent');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM outcomes o WHERE $told AND $rows AND r.state <> 'failed') > 0"),
	'0', 'a call told that no payment was registered has no row, or a failed one');
# done: the call succeeded, or it failed and the invoice then showed the
# payment applied (reconciled); a failed call's row is done only so
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM billogram_requests r JOIN outcomes o "
		  . "ON r.billogram_id = format('L%sx%s', o.session, o.n) "
		  . "WHERE (r.state = 'done') <> (o.sqlstate = 'ok' OR coalesce(r.resolution ~ '^reconciled', false))"),
	'0', 'a row is done exactly when its call succeeded or its payment was reconciled');

my %n;
$n{ $_->{id} }++ for grep { $_->{id} =~ /^L/ } @{ $mock->posts };
is(scalar(grep { $_ > 1 } values %n), 0, 'the mock received no payment twice');

# a reconciled payment is one the mock applied
my @reconciled = split /\n/, $node->safe_psql('postgres',
	"SELECT billogram_id FROM billogram_requests WHERE billogram_id LIKE 'L%' AND resolution ~ '^reconciled'");
is(scalar(grep { @{ $mock->invoice($_)->{payments} } != 1 } @reconciled), 0,
	scalar(@reconciled) . ' payments reconciled, each applied once at the mock');

$node->stop;
$mock->stop;
done_testing();
