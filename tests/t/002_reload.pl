# URL, credentials and CA file take effect on pg_reload_conf(), without a
# restart; the password, read from its file, never reaches the server log,
# the journal or a process title.
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
my $wrong = 'Wr0ng-pa55word-x';
# verbose logging, so that a leak at any level would show
my $node = $mock->new_node('reload', password => $wrong,
	log_min_messages => 'debug5');
my $pid = BgTest::worker_pid($node);

my ($state, $out, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('r1', 'amount', 5)");
is($state, 'BG403', 'a wrong password: BG403');
like($err, qr/INVALID_AUTH/, "with Billogram's status");

# Set a new value and reload; wait until the worker has read it.
sub reconfigure
{
	my ($line, $probe_sql, $want) = @_;
	$node->append_conf('postgresql.conf', "$line\n");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	my $got = '';
	for (1 .. 100)
	{
		($got) = BgTest::call($node, $probe_sql);
		return $got if $got eq $want;
		usleep(100_000);
	}
	return $got;
}

my $n = 0;
is( reconfigure(
		"billogram.api_password_file = '" . $mock->secret_file($BgTest::PASSWORD) . "'",
		"SELECT billogram_credit_payment('r2x' || " . $n++ . ", 'amount', 5)", ''),
	'', 'the right password works after pg_reload_conf()');
is(BgTest::worker_pid($node), $pid, 'without restarting the worker');

# A CA that did not sign the server's certificate: verification fails and
# nothing is sent.
my $other = PostgreSQL::Test::Utils::tempdir('otherca');
system('bash', "$BgTest::TOP/tests/mock/gen-cert.sh", $other) == 0 or die;
is( reconfigure(
		"billogram.ca_file = '$other/ca.crt'",
		"SELECT billogram_credit_payment('r3', 'amount', 5)", 'BG000'),
	'BG000', 'an untrusted server certificate: BG000');
($state, $out, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('r4', 'amount', 5)");
like($err, qr/certificate/i, 'the message names the certificate problem');
like($err, qr/did not reach Billogram/, 'and says nothing was sent');
is(scalar @{ $mock->posts('r4') }, 0, 'the mock received nothing');

is( reconfigure(
		"billogram.ca_file = '$mock->{certs}/ca.crt'",
		"SELECT billogram_credit_payment('r5', 'amount', 5)", ''),
	'', 'the right CA file works again after reload');

# A new API URL: a second mock on another port.
my $mock2 = BgTest->start_mock(certs => $mock->{certs});
is( reconfigure(
		"billogram.api_url = '" . $mock2->url . "'",
		"SELECT billogram_credit_payment('r6', 'amount', 5)", ''),
	'', 'a new API URL is used after reload');
is(scalar @{ $mock2->posts('r6') }, 1, 'the request went to the new URL');
is(scalar @{ $mock->posts('r6') }, 0, 'and not to the old one');

# A certificate from the trusted CA but for another host name: host name
# verification refuses it (it cannot be switched off) and nothing is sent.
my $elsewhere = PostgreSQL::Test::Utils::tempdir('elsewhere');
system('bash', "$BgTest::TOP/tests/mock/gen-cert.sh", "$elsewhere/certs",
	'DNS:billogram.invalid') == 0
  or die 'gen-cert.sh failed';
my $mock3 = BgTest->start_mock(dir => $elsewhere, certs => "$elsewhere/certs");
is( reconfigure(
		"billogram.api_url = '" . $mock3->url . "'\n"
		  . "billogram.ca_file = '$elsewhere/certs/ca.crt'",
		"SELECT billogram_credit_payment('r10', 'amount', 5)", 'BG000'),
	'BG000', 'a certificate for another host name: BG000');
($state, $out, $err) = BgTest::call($node,
	"SELECT billogram_credit_payment('r11', 'amount', 5)");
like($err, qr/host name|subject name/i, 'the message names the host name mismatch');
like($err, qr/did not reach Billogram/, 'and says nothing was sent');
is(scalar @{ $mock3->requests }, 0, 'that server received no request');
is( reconfigure(
		"billogram.api_url = '" . $mock2->url . "'\n"
		  . "billogram.ca_file = '$mock->{certs}/ca.crt'",
		"SELECT billogram_credit_payment('r12', 'amount', 5)", ''),
	'', 'back to the right server');
$mock3->stop;

# A plain http URL is refused by the setting itself.
($state, undef, $err) = BgTest::call($node,
	"ALTER SYSTEM SET billogram.api_url = 'http://localhost:1/api/v2'");
is($state, '22023', 'an http:// URL is refused');
like($err, qr/must start with https/, 'with a clear reason');

# For local testing a superuser may allow http://; without that setting
# the worker refuses it even if the URL got in.
my $http_url = "http://127.0.0.1:" . ($mock->{ctl} =~ /:(\d+)$/)[0] . "/api/v2";
$node->safe_psql('postgres', 'ALTER SYSTEM SET billogram.allow_insecure_http = on');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
$node->safe_psql('postgres', "ALTER SYSTEM SET billogram.api_url = '$http_url'");
is( reconfigure("", "SELECT billogram_credit_payment('r7', 'amount', 5)", 'BG404'),
	'BG404', 'with allow_insecure_http a plain http:// URL is used (the mock control port answers 404)');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET billogram.allow_insecure_http');
($state, undef, $err) = ('', '', '');
for (1 .. 50)
{
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	($state, undef, $err) = BgTest::call($node,
		"SELECT billogram_credit_payment('r8', 'amount', 5)");
	last if $state eq 'BG000';
	sleep 0.2;
}
is($state, 'BG000', 'turned off again, the worker refuses the http:// URL it still has');
like($err, qr/plain http:\/\/ refused/, 'saying why');
like($err, qr/did not reach Billogram/, 'and that nothing was sent');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET billogram.api_url');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');

is(BgTest::worker_pid($node), $pid, 'the worker was never restarted');

# the journal holds every call of this test, none with a password in it
# (read out whole: a statement naming the old password would log it)
my $journal = $node->safe_psql('postgres', 'SELECT r::text FROM billogram_requests r');
ok(scalar(split /\n/, $journal) > 1, 'the journal has the calls of this test');
unlike($journal, qr/\Q$BgTest::PASSWORD\E|\Q$wrong\E/,
	'the password is not in the journal');

# nor in any server process's title or command line
my @pids = split /\n/, $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity UNION SELECT pg_backend_pid()");
push @pids, $node->{_pid};	# the postmaster
my $titles = join "\n", map { my $t = eval { slurp_file("/proc/$_/cmdline") } // '';
	$t =~ s/\0/ /gr } grep { $_ } @pids;
like($titles, qr/billogram worker/, 'the process titles include the worker\'s');
unlike($titles, qr/\Q$BgTest::PASSWORD\E|\Q$wrong\E/,
	'no process title holds the password');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$BgTest::PASSWORD\E/, 'the password is not in the server log');
unlike($log, qr/\Q$wrong\E/, 'nor the earlier wrong password');
like($log, qr/parameter "billogram.api_password_file" changed to "[^"]*"\n/,
	'the reload logs the file\'s path, not what it holds');

$mock->stop;
$mock2->stop;
done_testing();
