# Errors a program can read: Billogram's status and field from a fixed place
# in the DETAIL (see src/report.c), read by a PL/pgSQL handler; hints on
# 401/403, PERMISSION_DENIED apart; no credentials means nothing is sent;
# and long non-ASCII messages are cut at a character boundary.
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
my $node = $mock->new_node('readable');
my $pid = BgTest::worker_pid($node);

# what a payments program does: branch on Billogram's status, not the text
$node->safe_psql('postgres', q{
	CREATE FUNCTION try_pay(id text, mode text, amount numeric DEFAULT NULL)
	RETURNS text LANGUAGE plpgsql AS $$
	DECLARE
		st text;
		d text;
	BEGIN
		PERFORM billogram_credit_payment(id, mode, amount);
		RETURN 'ok';
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, d = PG_EXCEPTION_DETAIL;
		RETURN st || ' ' ||
			coalesce(substring(d from '^billogram_status=([^\n]*)'), '-') || ' ' ||
			coalesce(substring(d from '\nfield=([^\n]*)'), '-');
	END $$;
});

is($node->safe_psql('postgres', "SELECT try_pay('settled1', 'remaining')"), 'ok',
	'a first payment of the remaining sum succeeds');
is($node->safe_psql('postgres', "SELECT try_pay('settled1', 'remaining')"),
	'BG400 INVALID_OBJECT_STATE -',
	'the second: the handler reads INVALID_OBJECT_STATE, and no field');
is($node->safe_psql('postgres', "SELECT try_pay('settled2', 'amount', 5000)"),
	'BG400 INVALID_PARAMETER amount',
	'too large an amount: INVALID_PARAMETER and field amount');
is($node->safe_psql('postgres', "SELECT try_pay('e403a', 'amount', 1)"),
	'BG403 PERMISSION_DENIED -', 'PERMISSION_DENIED is told apart from INVALID_AUTH');
is($node->safe_psql('postgres', "SELECT try_pay('e503a', 'amount', 1)"),
	'BG503 - -', 'a reply without a Billogram status has no status line');
# the 503 paused sending (014_pause): wait until the worker may send again
$node->poll_query_until('postgres',
	'SELECT paused_until IS NULL OR paused_until < clock_timestamp() FROM billogram_health')
  or die 'still paused';

my ($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('settled2', 'amount', 5000)");
like($err, qr/DETAIL:  billogram_status=INVALID_PARAMETER\nfield=amount\nField: amount, field_path \["amount"\]\. Billogram did not act/,
	'the DETAIL: the fixed lines first, then the prose');

# 401 names the settings to check; a 403 PERMISSION_DENIED, the first a
# new account meets, says Billogram must enable stand-alone credit invoices;
# both name billogram.api_url, since sandbox credentials fail in production
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('e401a', 'amount', 1)");
like($err, qr/HINT:  Check billogram.api_user and the password in the file named by billogram.api_password_file/,
	"$state carries a hint naming the credential settings");
like($err, qr/HINT: .*credentials each work only against their own billogram.api_url/,
	"$state: and the base URL the credentials belong to");
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('e403b', 'amount', 1)");
like($err, qr/HTTP 403 PERMISSION_DENIED.*\nHINT:  Billogram must enable stand-alone credit invoices on the account/s,
	"$state PERMISSION_DENIED: the hint says Billogram must enable stand-alone credit invoices");
like($err, qr/HINT: .*credentials each work only against their own billogram.api_url/,
	"$state PERMISSION_DENIED: and names the base URL");
unlike($err, qr/HINT: .*Check billogram.api_user/,
	"$state PERMISSION_DENIED: not the password, which is not what Billogram refused");

# a long Swedish message: cut at a character boundary, kept in the journal
# the mock's message is this with 100 repetitions, 618 bytes
my $cut_sql = q{'Felaktigt belopp: ' || repeat(U&'\00e5\00e4\00f6', 82)};  # 510 bytes
my $cut = 'Felaktigt belopp: ' . ("\x{e5}\x{e4}\x{f6}" x 82);
utf8::encode($cut);    # as psql prints it
$node->safe_psql('postgres',
	"SELECT billogram_enqueue_credit_payment('longsv1', 'amount', 1)");
ok(BgTest::wait_settled($node), 'the queued payment with the long message settled');
my $row = $node->safe_psql('postgres',
	"SELECT state || ' ' || octet_length(error ->> 'message') || ' ' || (error ->> 'message' = $cut_sql) "
	  . "FROM billogram_requests WHERE billogram_id = 'longsv1'");
is($row, 'failed 510 true',
	'the journal keeps the message, cut after its last whole character (510 bytes)');
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('longsv2', 'amount', 1)");
my $decoded = $err;
ok(utf8::decode($decoded), 'the caller\'s error is valid UTF-8');
like($err, qr/INVALID_PARAMETER: \Q$cut\E\n/, 'the caller gets the same text, valid UTF-8');

# no credentials: a clear error, nothing sent, queued payments wait
$node->append_conf('postgresql.conf', "billogram.api_user = ''\n");
$node->reload;
sleep 1;
($state, undef, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('nocred1', 'amount', 1)");
is($state, '55000', 'a call without credentials fails with 55000');
like($err, qr/no Billogram API credentials are configured: the credit payment on nocred1 was not sent/,
	'saying none are configured');
like($err, qr/DETAIL:  billogram.api_user is empty/, 'and which setting is empty');
like($err, qr/HINT:  Check billogram.api_user and the password in the file named by billogram.api_password_file/,
	'with a hint');
is(scalar @{ $mock->requests('nocred1') }, 0, 'nothing reached the API');
$node->safe_psql('postgres',
	"SELECT billogram_enqueue_credit_payment('nocredq1', 'amount', 1)");
ok($node->wait_for_log(qr/queued payments are not sent: billogram.api_user is empty/),
	'the worker warns that queued payments wait');
sleep 1;
is($node->safe_psql('postgres',
	"SELECT state FROM billogram_requests WHERE billogram_id = 'nocredq1'"),
	'pending', 'the queued payment stays pending');
is(scalar @{ $mock->requests('nocredq1') }, 0, 'and is not sent');

$node->append_conf('postgresql.conf', "billogram.api_user = '$BgTest::USER'\n");
$node->reload;
ok( $node->poll_query_until('postgres',
		"SELECT state = 'done' FROM billogram_requests WHERE billogram_id = 'nocredq1'"),
	'with credentials back, it is sent');
is(scalar @{ $mock->posts('nocredq1') }, 1, 'once');
is(BgTest::worker_pid($node), $pid, 'the worker never restarted');

$node->stop;
$mock->stop;
done_testing();
