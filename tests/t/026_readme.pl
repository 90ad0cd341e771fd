# The README's SQL examples, run as written, in the README's order, against
# a cluster set up as the README says.
#
# What counts as an example: every fenced block whose language is `sql`.
# Each is one of two kinds, told apart by its text:
#   - a synopsis, `billogram.NAME(ARGS) RETURNS TYPE` and nothing else: it
#     is checked against the catalog (arguments, defaults, result type);
#   - anything else is run with psql, from a file, as a superuser connected
#     to billogram.database (`postgres`), stopping at the first error: it
#     must succeed.  Where the block shows psql's output (a table's header
#     and rule, or lines starting `NOTICE:`), everything from there on is
#     output, compared with what psql prints in its default aligned format.
# No block is skipped.  A block that needs what the README leaves to the
# reader (a request id, a callback's signature, pg_cron) is run with one of
# the substitutions in %SUBST below, each matched by a pattern that must
# match exactly one block, so a stale entry fails too; a new block is run
# as written, and fails if it cannot be.  A fence of another language is
# not an example, but one holding SQL (a line starting with a statement's
# first word) fails the test: it should be `sql`; the plain block of
# errors the README quotes from the regression tests must be found, each
# error as quoted, in expected/*.out.
#
# The cluster: the README's postgresql.conf lines, its four placeholders
# replaced by the mock (URL, user, password file, CA file); the roles its
# grants name (finance, payouts_owner, clerk) and the table its trigger
# example uses (payouts) made beforehand; the extension created by the
# README's own first example.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $readme = "$BgTest::TOP/README.md";

# The README's fenced blocks: { lang, text, line }.
sub fenced_blocks
{
	my ($path) = @_;
	open my $fh, '<', $path or die "$path: $!";
	my (@blocks, $cur);
	while (my $l = <$fh>)
	{
		if (!$cur && $l =~ /^```(\S*)\s*$/)
		{
			$cur = { lang => $1, text => '', line => $. };
		}
		elsif ($cur && $l =~ /^```\s*$/)
		{
			push @blocks, $cur;
			undef $cur;
		}
		elsif ($cur)
		{
			$cur->{text} .= $l;
		}
	}
	die "$path: a fence opened at line $cur->{line} is never closed" if $cur;
	return @blocks;
}

# A block split into the SQL and the output it shows ('' if none): the
# output starts at a table's header (the line before a rule such as
# `----+----`) or at the first `NOTICE:` line.
sub split_output
{
	my ($text) = @_;
	my @l = split /\n/, $text;
	for my $i (0 .. $#l)
	{
		if ($l[$i] =~ /^(NOTICE|WARNING):  /
			|| ($i < $#l && $l[ $i + 1 ] =~ /^-+(\+-+)*$/))
		{
			return (join("\n", @l[ 0 .. $i - 1 ]) . "\n",
				join("\n", @l[ $i .. $#l ]) . "\n");
		}
	}
	return ($text, '');
}

my $mock = BgTest->start_mock;
my $sign_key = 'readme-sign-key-0123';

# --- the substitutions: what the README leaves to the reader ---
# match: the pattern that finds the one block it applies to;
# before: SQL run first, for what the example presumes exists;
# edit: the change made to the block's text, and why;
# expect: what its output must hold, where the README names it in prose.
my %SUBST = (
	resolve => {
		match => qr/billogram_resolve\(42, 'mark_done'\)/,
		# "42" stands for an in_doubt row: make one (the mock's ndrop
		# reads the request and closes without a reply, applying nothing)
		before => q{SELECT billogram.billogram_credit_payment('ndrop1', 'amount', 10)},
		before_fails => 'BG000',
		edit => sub {
			$_[0] =~ s/billogram_resolve\(42,/billogram_resolve((SELECT id FROM billogram.billogram_requests WHERE billogram_id = 'ndrop1'),/
			  or die 'resolve: no 42 to replace';
		},
	},
	callback => {
		match => qr/billogram_record_callback\(:'timestamp'/,
		# the three \set values are a callback's, shortened: use a whole
		# one, signed by the mock with the key in callback_sign_key_file
		edit => sub {
			my $cb = $mock->signed_callback('2kAEEjE', $sign_key);
			for my $var (qw(timestamp signature body))
			{
				(my $v = $cb->{$var}) =~ s/(['\\])/\\$1/g;
				$_[0] =~ s/^\\set $var '.*'$/\\set $var '$v'/m
				  or die "callback: no \\set $var to replace";
			}
		},
		expect => qr/^\s*recorded$/m,
	},
	idempotency => {
		match => qr/-- \.\.\. BG000: no reply within billogram\.timeout\./,
		# the first call is answered here, not cut off by a timeout; a
		# retry comes after billogram.timeout, when the first call's
		# outcome is recorded: wait for that before the retry (a retry
		# while it is still being recorded gets BG004, as the table says)
		edit => sub {
			$_[0] =~ s/^(-- \.\.\. BG000: .*)$/$1
DO \$w\$ BEGIN
    WHILE EXISTS (SELECT FROM billogram.billogram_requests
                   WHERE idempotency_key = 'payout-2024-0042' AND state IN ('pending', 'sending'))
          AND clock_timestamp() < statement_timestamp() + interval '60 s' LOOP
        PERFORM pg_sleep(0.05);
    END LOOP;
END \$w\$;/m
			  or die 'idempotency: no comment line to follow';
		},
	},
	pg_cron => {
		match => qr/CREATE EXTENSION pg_cron;/,
		# pg_cron is not among the suite's packages: a stand-in
		# cron.schedule runs the scheduled command once, so that the
		# command the README schedules is run as written
		edit => sub {
			$_[0] =~ s/^CREATE EXTENSION pg_cron;$/CREATE SCHEMA cron;
CREATE FUNCTION cron.schedule(job_name text, schedule text, command text) RETURNS bigint
    LANGUAGE plpgsql AS \$f\$ BEGIN EXECUTE command; RETURN 1; END \$f\$;/m
			  or die 'pg_cron: no CREATE EXTENSION to replace';
		},
	},
);

# --- the cluster, as the README configures it ---
my @blocks = fenced_blocks($readme);
my ($conf) = grep { $_->{lang} eq '' && $_->{text} =~ /^shared_preload_libraries = 'billogram'$/m } @blocks;
ok($conf, "the README has the postgresql.conf lines (line $conf->{line})");
my $conftext = $conf->{text};
my %placeholder = (
	'billogram.api_url' => $mock->url,
	'billogram.api_user' => $BgTest::USER,
	'billogram.api_password_file' => $mock->secret_file($BgTest::PASSWORD),
	'billogram.ca_file' => "$mock->{certs}/ca.crt",
);
while (my ($name, $value) = each %placeholder)
{
	$conftext =~ s/^\Q$name\E = '[^']*'/$name = '$value'/m
	  or die "the README's postgresql.conf has no $name line";
}
my $node = PostgreSQL::Test::Cluster->new('readme');
$node->init;
$node->append_conf('postgresql.conf', $conftext);
$node->append_conf('postgresql.conf',
	"billogram.callback_sign_key_file = '" . $mock->secret_file($sign_key) . "'");
$node->start;
$node->safe_psql('postgres', q{
	CREATE ROLE finance;
	CREATE ROLE payouts_owner;
	CREATE ROLE clerk;
	CREATE TABLE payouts (id bigserial PRIMARY KEY, billogram_id text NOT NULL, amount numeric(12, 2));
});

# --- the examples ---
my $expected = join('', map { slurp_file($_) } glob("$BgTest::TOP/expected/*.out"));
my %used;
my $examples = 0;
for my $b (@blocks)
{
	my $where = "README.md line $b->{line}";
	if ($b->{lang} eq '' && $b->{text} =~ /\AERROR:  /)
	{
		# the errors the README quotes "from the regression tests"
		for my $para (split /\n\n/, $b->{text})
		{
			$para =~ s/\n*\z/\n/;
			ok(index($expected, $para) >= 0,
				"$where: an error the regression tests print: " . (split /\n/, $para)[0]);
		}
		next;
	}
	if ($b->{lang} ne 'sql')
	{
		unlike($b->{text},
			qr/^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|GRANT|REVOKE|DROP|DO|CALL|BEGIN|COMMIT)\s/m,
			"$where: a `$b->{lang}` block holds no SQL (SQL goes in a `sql` block)");
		next;
	}
	$examples++;

	if ($b->{text} =~ /^\s*billogram\.(\w+)\((.*)\)\s+RETURNS\s+(\S+)\s*$/s)
	{
		my ($name, $args, $result) = ($1, $2, $3);
		s/\s+/ /g for $args;
		my $cat = $node->safe_psql('postgres', qq{
			SELECT regexp_replace(pg_get_function_arguments(p.oid), '(DEFAULT NULL)::\\w+', '\\1', 'g')
			       || '|' || pg_get_function_result(p.oid)
			  FROM pg_proc p WHERE p.pronamespace = 'billogram'::regnamespace AND p.proname = '$name'});
		is("$args|$result", $cat, "$where: the synopsis of $name is the catalog's");
		next;
	}

	my ($sql, $shown) = split_output($b->{text});
	my @subst = grep { $sql =~ $SUBST{$_}{match} } sort keys %SUBST;
	die "$where: more than one substitution matches" if @subst > 1;
	my $s = @subst ? $SUBST{ $subst[0] } : undef;
	if ($s)
	{
		$used{ $subst[0] }++;
		if ($s->{before})
		{
			my ($state) = BgTest::call($node, $s->{before});
			is($state, $s->{before_fails} // '', "$where: what it presumes is made");
		}
		$s->{edit}->($sql);
	}

	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres',
		"\\pset format aligned\n\\pset tuples_only off\n\\set VERBOSITY default\n$sql",
		stdout => \$out, stderr => \$err, on_error_stop => 1);
	is($rc, 0, "$where: runs as written" . ($s ? " ($subst[0] substituted)" : ''))
	  or diag("SQL:\n$sql\nstderr:\n$err");
	if ($shown ne '')
	{
		# psql pads a centered header to the column's width: the README's
		# editor may have trimmed that
		my $printed = join("\n", map { s/\s+$//r }
			  (grep { /^(NOTICE|WARNING):  / } map { s/^psql:<stdin>:\d+: //r } split /\n/, $err),
			  split /\n/, $out);
		my $want = join("\n", map { s/\s+$//r } split /\n/, $shown);
		is($printed, $want, "$where: prints what the README shows");
	}
	like($out, $s->{expect}, "$where: prints what the README says") if $s && $s->{expect};

	# a queued payment goes before the next example looks at invoices
	ok(BgTest::wait_settled($node, 60), "$where: its queued payments are sent")
	  if $sql =~ /INSERT INTO payouts/;
}
ok($examples >= 10, "the README's sql blocks were found ($examples)");
is_deeply([ sort grep { !$used{$_} } keys %SUBST ], [],
	'every substitution applied to a block of the README');

$node->stop;
$mock->stop;
done_testing();
