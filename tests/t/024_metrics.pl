# What a dashboard reads: billogram_metrics counts each fact once, exactly
# as it happened against the mock (successes, a 500, a dropped reply, a 429
# and its pause, rows made in_doubt and settled), its histogram is
# cumulative and counts every exchange; the sql_exporter collector's
# queries run against the real view, as a pg_monitor role, and name only
# what exists; and every line our code writes to the server log starts
# with the one prefix, "billogram: ".
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use CPAN::Meta::YAML;
use JSON::PP qw(decode_json);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = "$FindBin::Bin/../..";
my $mock = BgTest->start_mock;
my $node = $mock->new_node('metrics',
	extra => "billogram.settle_time = '3s'\nlog_error_verbosity = verbose\n");
BgTest::worker_pid($node);

sub query { return $node->safe_psql('postgres', $_[0]); }

# Every counter of the view, "metric{label=value,...}" => value.
sub counters
{
	my %c;
	for my $line (split /\n/, query(q{
		SELECT metric || '{' || concat_ws(',', 'kind=' || kind, 'outcome=' || outcome,
		                                  'class=' || class, 'verdict=' || verdict, 'le=' || le)
		       || '}|' || value
		  FROM billogram_metrics}))
	{
		my ($k, $v) = split /\|/, $line;
		$c{$k} = $v;
	}
	return \%c;
}

my $before = counters();
ok(scalar(keys %$before) > 0, 'the view has its series before anything happened');
is(scalar(grep { $before->{$_} != 0 } keys %$before), 0, 'all of them zero on a new server');
$mock->reset;

# --- the mix ---
# three synchronous payments that succeed, each on an invoice the ledger
# does not know, so each is read first
for my $i (1 .. 3)
{
	my ($state) = BgTest::call($node, "SELECT billogram_credit_payment('okm$i', 'amount', 1)");
	is($state, '', "payment okm$i succeeds");
}
# a 500 after Billogram applied it, and a reply dropped after it applied
# it: both rows in_doubt, settled applied by reading the invoice
my ($state) = BgTest::call($node, "SELECT billogram_credit_payment('a500m1', 'amount', 1)");
is($state, 'BG500', 'a 500');
($state) = BgTest::call($node, "SELECT billogram_credit_payment('adropm1', 'amount', 1)");
isnt($state, '', 'a dropped reply');
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM billogram_requests WHERE state <> 'done'")
  or die 'the in_doubt rows were not settled';
# a GET of an invoice, which the ledger then knows, so that its queued
# payment goes without another reading; the payment's first answer is a
# 429, which pauses sending, and the probe after the pause succeeds
($state) = BgTest::call($node, "SELECT billogram_get_invoice('okq1') ->> 'id'");
is($state, '', 'a GET');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM billogram_ledger WHERE billogram_id = 'okq1'")
  or die 'the GET did not reach the ledger';
$mock->fault('{"mode":"status","status":429,"retry_after":1,"count":1}');
query("SELECT billogram_enqueue_credit_payment('okq1', 'amount', 1)");

# the final state: every row done, and the counters of the commits that
# made it so added
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM billogram_requests WHERE state <> 'done'")
  or die 'the rows did not all end done';
$node->poll_query_until('postgres', q{
	SELECT sum(value) = 3 FROM billogram_metrics
	 WHERE metric IN ('billogram_retries_total', 'billogram_in_doubt_settled_total')})
  or die 'the settlements and the retry were not counted';

my $after = counters();
my %delta = map { $_ => $after->{$_} - ($before->{$_} // 0) } keys %$after;
my @requests = @{ $mock->requests };
my $gets = sub { my ($id) = @_; scalar grep { $_->{method} eq 'GET' } @{ $mock->requests($id) } };
my $snapshots = $gets->('a500m1') + $gets->('adropm1') - 2;
ok($snapshots >= 2, "each in_doubt invoice read again to settle it ($snapshots readings)");

my %expected = (
	'billogram_requests_total{kind=credit_payment,outcome=ok}' => 3,
	'billogram_requests_total{kind=credit_payment,outcome=api_error}' => 1,
	'billogram_requests_total{kind=credit_payment,outcome=no_reply}' => 1,
	'billogram_requests_total{kind=get_invoice,outcome=ok}' => 1,
	'billogram_requests_total{kind=read,outcome=ok}' => 5,
	'billogram_requests_total{kind=snapshot,outcome=ok}' => $snapshots,
	'billogram_requests_total{kind=queued,outcome=api_error}' => 1,
	'billogram_requests_total{kind=queued,outcome=ok}' => 1,
	'billogram_http_responses_total{class=2xx}' => scalar(@requests) - 3,
	'billogram_http_responses_total{class=4xx}' => 1,
	'billogram_http_responses_total{class=5xx}' => 1,
	'billogram_http_responses_total{class=none}' => 1,
	'billogram_retries_total{}' => 1,
	'billogram_pauses_total{}' => 1,
	'billogram_in_doubt_created_total{}' => 2,
	'billogram_in_doubt_settled_total{verdict=applied}' => 2,
	'billogram_http_duration_seconds_count{}' => scalar(@requests),
);
for my $k (sort keys %delta)
{
	next if $k =~ /_bucket\{|_sum\{/;
	is($delta{$k}, $expected{$k} // 0, "$k moved by " . ($expected{$k} // 0));
}
for my $k (sort keys %expected)
{
	ok(exists $delta{$k}, "$k is a series of the view");
}

# the histogram: cumulative, its +Inf bucket the count, which is the sum
# of the status classes, and a sum of times
my @buckets = map { [ $_->[0], $_->[1] ] }
  sort { $a->[2] <=> $b->[2] }
  map { my ($le) = /le=([^}]+)/; [ $le, $delta{$_}, $le eq '+Inf' ? 9**9**9 : $le ] }
  grep { /^billogram_http_duration_seconds_bucket\{/ } keys %delta;
is(scalar @buckets, 14, '13 bounds and +Inf');
my @decreasing = grep { $buckets[$_][1] < $buckets[ $_ - 1 ][1] } 1 .. $#buckets;
is(scalar @decreasing, 0, 'each bucket holds at least the one below it');
is($buckets[-1][0], '+Inf', 'the last bucket is +Inf');
is($buckets[-1][1], $delta{'billogram_http_duration_seconds_count{}'}, '+Inf is the count');
my $classes = 0;
$classes += $delta{$_} for grep { /^billogram_http_responses_total\{/ } keys %delta;
is($classes, scalar(@requests), 'one status class per request the mock received');
my $by_kind = 0;
$by_kind += $delta{$_} for grep { /^billogram_requests_total\{/ } keys %delta;
is($by_kind, scalar(@requests), 'one outcome per request sent, none of them refused unsent');
ok($delta{'billogram_http_duration_seconds_sum{}'} > 0, 'their times add up to more than nothing');

# --- the collector for sql_exporter ---
my $file = "$top/contrib/sql_exporter/billogram.collector.yml";
my $yaml = CPAN::Meta::YAML->read($file)
  or die "cannot read $file: " . CPAN::Meta::YAML->errstr;
my $collector = $yaml->[0];
is($collector->{collector_name}, 'billogram', 'the collector is named billogram');
query('CREATE ROLE scraper LOGIN; GRANT pg_monitor TO scraper');
my %in_view = map { $_ => 1 } split /\n/, query('SELECT DISTINCT metric FROM billogram_metrics');
my %collected;
for my $m (@{ $collector->{metrics} })
{
	my $name = $m->{metric_name};
	$collected{$name} = 1;
	like($m->{type}, qr/^(counter|gauge)$/, "$name: a counter or a gauge");
	ok(length($m->{help} // '') > 10, "$name: has help");
	# run as a monitoring role whose search_path does not hold billogram
	my $json = query("SET ROLE scraper; SET search_path = public; "
		  . "SELECT json_agg(q) FROM ($m->{query}) q");
	my $rows = decode_json($json || '[]') // [];
	ok(@$rows > 0, "$name: its query returns rows as a pg_monitor role");
	my @columns = sort keys %{ $rows->[0] // {} };
	is(join(',', @columns), join(',', sort(@{ $m->{key_labels} // [] }, @{ $m->{values} })),
		"$name: it returns exactly its labels and values");
	if ($m->{query} =~ /billogram_metrics/)
	{
		ok($in_view{$name}, "$name is a metric of the view");
		my @other = grep { $_->{$m->{values}[0]} !~ /^[0-9.eE+-]+$/ } @$rows;
		is(scalar @other, 0, "$name: numbers only");
	}
}
my @missing = grep { !$collected{$_} } sort keys %in_view;
is("@missing", '', 'every metric of the view is collected');

# --- one log prefix ---
# Every line our code wrote to the log (verbose: each message's LOCATION
# names its function and file) below ERROR starts with "billogram: ".
my (%ours, @messages, $current);
for my $c (glob "$top/src/*.c")
{
	open(my $fh, '<', $c) or die "$c: $!";
	my ($base) = $c =~ m{([^/]+)$};
	while (<$fh>) { $ours{"$1 $base"} = 1 if /^(\w+)\(/; }
	close($fh);
}
for (split /\n/, slurp_file($node->logfile))
{
	if (/\b(LOG|WARNING|NOTICE|INFO|DEBUG\d|ERROR|FATAL|PANIC):  [0-9A-Z]{5}: (.*)$/)
	{
		$current = { level => $1, text => $2 };
		push @messages, $current;
	}
	elsif (/LOCATION:  (\w+), ([\w.]+):\d+/ && $current)
	{
		$current->{ours} = $ours{"$1 $2"};
	}
}
# (NOTICE and ERROR are the calling session's, worded for it)
my @from_us = grep { $_->{ours} && $_->{level} =~ /^(LOG|WARNING|INFO|DEBUG\d)$/ } @messages;
my @unprefixed = grep { $_->{text} !~ /^billogram: / } @from_us;
is(join("\n", map { "$_->{level}: $_->{text}" } @unprefixed), '',
	'each of them starts with "billogram: "');
for my $line (qr/worker started, API at/, qr/Billogram answered HTTP 429; sending is paused/,
	qr/Billogram answers again; sending resumes/)
{
	ok((grep { $_->{text} =~ $line } @from_us), "found as ours: $line");
}
# and every message below ERROR in the source, logged in this run or not
my @source;
for my $c (glob "$top/src/*.c")
{
	my $text = slurp_file($c);
	while ($text =~ /\b(?:ereport|elog)\s*\(\s*(LOG|WARNING|INFO|DEBUG\d)\s*,(.*?)\);/sg)
	{
		my ($level, $body) = ($1, $2);
		my ($msg) = $body =~ /"((?:[^"\\]|\\.)*)"/s;
		push @source, "$c: $level $msg" unless $msg =~ /^billogram: /;
	}
}
is(join("\n", @source), '', 'every LOG and WARNING in src/ starts with "billogram: "');

$node->stop;
done_testing();
