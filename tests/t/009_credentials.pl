# The API password from a private file named by billogram.api_password_file,
# never in a statement's text; too-short passwords refused; masking that only
# hides the password itself; and what the journal keeps of an invoice
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

# A too-short password in postgresql.conf is refused, and the refusal does
# not quote it; the setting keeps its previous (empty) value.
$node->append_conf('postgresql.conf', "billogram.api_password = 'tiny-pw-x'\n");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
my $refused = 0;
for (1 .. 100)
{
	$refused = 1, last
	  if slurp_file($node->logfile) =~ /billogram.api_password is too short/;
	usleep(100_000);
}
ok($refused, 'a too-short password is refused on reload');
unlike(slurp_file($node->logfile), qr/tiny-pw-x/, 'and the log does not quote it');
$node->stop;

# Masking looks for the whole password only: with it in postgresql.conf,
# a message quoting it is masked, one quoting a fragment is left as it is
# (a short string would otherwise be masked inside ordinary words).
my $plain = $mock->new_node('masking');
($state, $out, $err) = BgTest::call($plain,
	"SELECT '$BgTest::PASSWORD'::int");
# (psql itself echoes the statement it sent under LINE 1: only the server's
# message line counts)
my ($message) = $err =~ /^(.*ERROR:.*)$/m;
like($message, qr/"\*\*\*\*\*\*\*\*"/, 'a message quoting the password is masked');
unlike($message, qr/\Q$BgTest::PASSWORD\E/, 'the password is not in it');
my $fragment = substr($BgTest::PASSWORD, 0, 8);
($state, $out, $err) = BgTest::call($plain, "SELECT '$fragment'::int");
like($err, qr/"\Q$fragment\E"/, 'a fragment of it is not masked');
($state, $out, $err) = BgTest::call($plain, "SELECT * FROM billogram_requestz");
like($err, qr/billogram_requestz/, 'ordinary words are left intact');

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
