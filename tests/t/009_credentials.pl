# The secrets only in files: the API password from a private file named by
# billogram.api_password_file, the callback sign key from one named by
# billogram.callback_sign_key_file, never in a statement's text; the settings
# that held them (billogram.api_password, billogram.callback_sign_key)
# refused wherever they are set, their value never used; no masking oracle
# in the log; and what the journal keeps of an invoice
# (billogram.journal_reply).
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use Digest::SHA qw(hmac_sha256_hex);

my $mock = BgTest->start_mock;
my $secrets = PostgreSQL::Test::Utils::tempdir('secrets');
my $file = "$secrets/billogram.password";

sub write_password
{
	my ($password, $mode) = @_;
	open my $fh, '>', $file or die "$file: $!";
	print $fh "$password\n";
	close $fh;
	chmod $mode, $file or die "chmod $file: $!";
}

write_password($BgTest::PASSWORD, 0600);
my $node = $mock->new_node(
	'credentials',
	password => '',
	log_min_messages => 'debug5',
	extra => "billogram.api_password_file = '$file'\n");
my $pid = BgTest::worker_pid($node);

my $n = 0;
sub pay
{
	my ($prefix) = @_;
	return BgTest::call($node,
		"SELECT billogram_credit_payment('$prefix" . $n++ . "', 'amount', 1)");
}

# Reload, then retry a payment until it ends as wanted (the worker rereads
# the file when it handles the reload).
sub reload_until
{
	my ($want) = @_;
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	my $got = '';
	for (1 .. 100)
	{
		($got) = pay('cred');
		return $got if $got =~ $want;
		usleep(100_000);
	}
	return $got;
}

my ($state, $out, $err) = pay('cred');
is($state, '', 'the password from the file is used: the payment is registered');
is($node->safe_psql('postgres', 'SHOW billogram.api_password'), '',
	'with no password in any setting');

# A wrong password in the file: Billogram refuses, after a reload.
write_password('Wr0ng-pa55word-x', 0600);
like(reload_until(qr/^BG403$/), qr/^BG403$/, 'a wrong password in the file: BG403 after reload');
($state, $out, $err) = pay('cred');
like($err, qr/INVALID_AUTH/, "with Billogram's status");

# A file others can read is not used: a warning, and calls are refused
# before anything is sent, since there is no password to send.
write_password($BgTest::PASSWORD, 0644);
my $posts_before = scalar @{ $mock->posts };
is(reload_until(qr/^55000$/), '55000',
	'a world-readable file is not used: calls are refused (55000)');
($state, $out, $err) = pay('cred');
like($err, qr/billogram.api_password_file could not be used/, 'naming the password file');
is(scalar @{ $mock->posts }, $posts_before, 'and nothing is sent');
my $log = slurp_file($node->logfile);
like($log, qr/password file ".*" is not used: group or other users can access it/,
	'the log says why the file is not used');
like($log, qr/is not used: group or other users can access it.*\n.*DETAIL:  No request is sent until the file is fixed/,
	'and that nothing is sent meanwhile (not that requests go without a password)');

write_password($BgTest::PASSWORD, 0600);
is(reload_until(qr/^$/), '', 'made private again, it is used after reload');
is(BgTest::worker_pid($node), $pid, 'all without restarting the worker');

# A missing file: not used, and the log says so.
unlink $file;
is(reload_until(qr/^55000$/), '55000', 'a missing file: calls are refused');
like(slurp_file($node->logfile), qr/password file ".*" is not used: No such file/,
	'the log names the missing file');
write_password($BgTest::PASSWORD, 0600);
is(reload_until(qr/^$/), '', 'restored, it is used again');

# Nothing anywhere shows the file's password.
$log = slurp_file($node->logfile);
unlike($log, qr/\Q$BgTest::PASSWORD\E/, 'the server log never holds the password');
my $activity = $node->safe_psql('postgres',
	"SELECT string_agg(coalesce(query, ''), ' ') FROM pg_stat_activity");
unlike($activity, qr/\Q$BgTest::PASSWORD\E/, 'nor does pg_stat_activity');
my $journal = $node->safe_psql('postgres', 'SELECT string_agg(r::text, \' \') FROM billogram_requests r');
unlike($journal, qr/\Q$BgTest::PASSWORD\E/, 'nor does the journal');

# A too-short password in the file is not used either.
write_password('tiny-pw-x', 0600);
is(reload_until(qr/^55000$/), '55000', 'a too-short password in the file: calls are refused');
like(slurp_file($node->logfile), qr/password file ".*" is not used: it holds fewer than 12 characters/,
	'the log says it is too short');
unlike(slurp_file($node->logfile), qr/tiny-pw-x/, 'and does not quote it');
write_password($BgTest::PASSWORD, 0600);
is(reload_until(qr/^$/), '', 'a good one is used again');

# The callback sign key, from its file, read at each verification.
my $sign_key = 'tap-sign-key-0123456789';
my $key_file = "$secrets/billogram.sign_key";
sub write_key
{
	my ($key, $mode) = @_;
	open my $fh, '>', $key_file or die "$key_file: $!";
	print $fh "$key\n";
	close $fh;
	chmod $mode, $key_file or die "chmod $key_file: $!";
}
sub verify_sql
{
	my ($key) = @_;
	my $ts = sprintf('%.6f', Time::HiRes::time());
	my $sig = hmac_sha256_hex("$ts:{}", $key);
	return "SELECT billogram_verify_callback('$ts', '$sig', '{}')";
}
write_key($sign_key, 0600);
$node->safe_psql('postgres',
	"ALTER SYSTEM SET billogram.callback_sign_key_file = '$key_file'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
$node->poll_query_until('postgres', verify_sql($sign_key), 't')
  or die 'the sign key file is not used';
pass('a callback signed with the key in the file is verified');
is($node->safe_psql('postgres', verify_sql('some-other-key-0123')), 'f',
	'one signed with another key is not');
write_key('tap-sign-key-rotated', 0600);
is($node->safe_psql('postgres', verify_sql('tap-sign-key-rotated')), 't',
	'a new key in the file applies at the next verification');
write_key($sign_key, 0644);
($state, $out, $err) = BgTest::call($node, verify_sql($sign_key));
is($state, '55000', 'a sign key file others can read is not used (55000)');
like($err, qr/the file named by billogram.callback_sign_key_file could not be used/,
	'naming the setting');
unlike($err, qr/\Q$key_file\E/, 'the caller is not told the path');
like(slurp_file($node->logfile),
	qr/sign key file "\Q$key_file\E" is not used: group or other users can access it/,
	'the log says why');
write_key($sign_key, 0600);

# The removed settings, set with SQL: refused, naming the file setting, as
# the role that tried (a superuser may ALTER SYSTEM; any role may SET and
# ALTER its own ROLE ... SET); nothing is stored, and the refused statement,
# which quotes the secret, is not logged.
$node->append_conf('postgresql.conf', "log_statement = none\n");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
$node->safe_psql('postgres', 'CREATE ROLE app_user LOGIN');
my %file_of = ('billogram.api_password' => 'billogram.api_password_file',
	'billogram.callback_sign_key' => 'billogram.callback_sign_key_file');
my $typed = 0;
for my $setting (sort keys %file_of)
{
	for my $route ('ALTER SYSTEM SET %s = %s', 'ALTER DATABASE postgres SET %s = %s',
		'ALTER ROLE app_user SET %s = %s', 'SET %s = %s', 'app_user:SET %s = %s',
		'app_user:ALTER ROLE app_user SET %s = %s')
	{
		my ($as, $form) = $route =~ /^(?:(app_user):)?(.*)$/;
		my $value = 'typed-secret-' . $typed++ . '-xyz';
		my $sql = sprintf($form, $setting, "'$value'");
		$sql = "SET ROLE app_user; $sql" if $as;
		($state, $out, $err) = BgTest::call($node, $sql);
		is($state, '22023', "$sql: refused (22023)");
		like($err, qr/\Q$setting\E is no longer a setting/, "$sql: the message names it");
		like($err, qr/HINT:  .*\Q$file_of{$setting}\E/, "$sql: the hint names $file_of{$setting}");
		unlike(slurp_file($node->logfile), qr/\Q$value\E/, "$sql: the value is not logged");
	}
}
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ' ') LIKE '%billogram.%'"),
	'0', 'no database or role keeps a value');
unlike(slurp_file($node->data_dir . '/postgresql.auto.conf'), qr/typed-secret/,
	'nor does postgresql.auto.conf');
is($node->safe_psql('postgres', "SET billogram.api_password = ''; SHOW billogram.api_password"),
	'', 'the empty value is accepted, and is all there is');
$node->stop;

# The removed settings in postgresql.conf: a WARNING at start, the server
# starts, and the worker, with no password file, sends nothing: the value
# is never used.  A callback is not verified with the old key either.
my $old = $mock->new_node('removed', password => '',
	extra => "billogram.api_password = '$BgTest::PASSWORD'\n"
	  . "billogram.callback_sign_key = '$sign_key'\n");
$log = slurp_file($old->logfile);
like($log, qr/WARNING:  billogram.api_password is no longer a setting/,
	'at start, a password in postgresql.conf is refused');
like($log, qr/HINT:  .*set billogram.api_password_file to its path/,
	'the hint names the file setting to use');
like($log, qr/WARNING:  billogram.callback_sign_key is no longer a setting/,
	'so is a sign key');
unlike($log, qr/\Q$BgTest::PASSWORD\E|\Q$sign_key\E/, 'neither value is logged');
$posts_before = scalar @{ $mock->posts };
($state, $out, $err) = BgTest::call($old,
	"SELECT billogram_credit_payment('oldsetting1', 'amount', 1)");
is($state, '55000', 'the password in the old setting is not used: the call is refused');
like($err, qr/billogram.api_password_file is not set/, 'naming the file setting');
($state, $out, $err) = BgTest::call($old, verify_sql($sign_key));
is($state, '55000', 'nor is the old sign key: no callback is verified');
like($err, qr/billogram.callback_sign_key_file is not set/, 'naming its file setting');

# Added on a reload: refused in the log, the server goes on, still nothing sent.
my $refusals = () = $log =~ /billogram.api_password is no longer a setting/g;
$old->append_conf('postgresql.conf', "billogram.api_password = 'Another-pa55word'\n");
$old->safe_psql('postgres', 'SELECT pg_reload_conf()');
my $seen = 0;
for (1 .. 100)
{
	my $now = () = slurp_file($old->logfile) =~ /billogram.api_password is no longer a setting/g;
	$seen = 1, last if $now > $refusals;
	usleep(100_000);
}
ok($seen, 'on reload, the setting is refused again');
is($old->safe_psql('postgres', 'SELECT 1'), '1', 'and the server goes on');
($state) = BgTest::call($old, "SELECT billogram_credit_payment('oldsetting2', 'amount', 1)");
is($state, '55000', 'the worker still refuses to send');
is(scalar @{ $mock->posts }, $posts_before, 'nothing was sent with credentials from a setting');
unlike(slurp_file($old->logfile), qr/Another-pa55word/, 'the reloaded value is not logged');
$old->stop;

# No masking oracle: a role that logs a list of guesses sees each come back
# as it wrote it, the right password and sign key included.  (0.2 masked the
# secrets in use, which told a guesser which guess was right.)
my $plain = $mock->new_node('plain');
$plain->safe_psql('postgres', 'CREATE ROLE guesser LOGIN');
$plain->safe_psql('postgres',
	"ALTER SYSTEM SET billogram.callback_sign_key_file = '$key_file'");
$plain->safe_psql('postgres', 'SELECT pg_reload_conf()');
$plain->poll_query_until('postgres', verify_sql($sign_key), 't')
  or die 'no sign key on plain';
my @guesses = ('guess-number-one', $BgTest::PASSWORD, $sign_key, 'guess-number-four');
($state, $out, $err) = BgTest::call($plain,
	"SET ROLE guesser; DO \$\$ BEGIN RAISE WARNING 'guesses: %', '"
	  . join(' ', @guesses) . "'; END \$\$");
my ($warning) = $err =~ /^(.*WARNING:.*guesses:.*)$/m;
like($warning, qr/guesses: \Q@guesses\E$/, 'every guess comes back as written');
unlike($warning, qr/\*\*\*\*/, 'none is masked');
like(slurp_file($plain->logfile), qr/WARNING:  .*guesses: \Q@guesses\E\n/,
	'the server log shows them as written too');

# billogram.journal_reply: what the journal keeps of an invoice.
sub journal_keeps
{
	my ($setting) = @_;
	$plain->append_conf('postgresql.conf', "billogram.journal_reply = '$setting'\n");
	$plain->safe_psql('postgres', 'SELECT pg_reload_conf()');
	for (1 .. 100)
	{
		my $id = 'keep' . $setting . $n++;
		BgTest::call($plain, "SELECT billogram_credit_payment('$id', 'amount', 1)");
		$plain->poll_query_until('postgres',
			"SELECT state = 'done' FROM billogram_requests WHERE billogram_id = '$id'")
		  or die "no journal row for $id";
		my $kept = $plain->safe_psql('postgres',
			"SELECT CASE WHEN response IS NULL THEN 'none' WHEN response ? 'customer' THEN 'full' ELSE 'summary' END
			   FROM billogram_requests WHERE billogram_id = '$id'");
		return $kept if $kept eq $setting;
		usleep(100_000);
	}
	return 'unchanged';
}
is(journal_keeps('full'), 'full', "journal_reply 'full' keeps the whole invoice, personal data included");
is(journal_keeps('none'), 'none', "journal_reply 'none' keeps nothing");
is(journal_keeps('summary'), 'summary', "journal_reply 'summary' keeps the summary");
($state, $out) = BgTest::call($plain,
	"SELECT inv ? 'customer' FROM billogram_credit_payment('keepcaller', 'amount', 1) inv");
is($out, 't', 'the caller still gets the whole invoice');
$plain->poll_query_until('postgres',
	"SELECT state = 'done' FROM billogram_requests WHERE billogram_id = 'keepcaller'")
  or die 'keepcaller not journaled';
my $summary = $plain->safe_psql('postgres',
	"SELECT response->>'remaining_sum' FROM billogram_requests WHERE billogram_id = 'keepcaller'");
is($summary, '-999.00', 'the summary has the sums');

done_testing();
