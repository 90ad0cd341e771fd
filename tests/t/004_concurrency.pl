# 16 sessions call at once: every call succeeds and each request is sent
# exactly once, through a bounded pool of connections.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $sessions = 16;
my $calls = 10;
my $mock = BgTest->start_mock;
my $node = $mock->new_node('concurrency', extra => "billogram.max_connections = 4\n");
BgTest::worker_pid($node);

my @runs;
for my $s (1 .. $sessions)
{
	my $sql = "SELECT inv->>'id' FROM generate_series(1, $calls) g, "
	  . "LATERAL billogram_credit_payment('c${s}x' || g, 'amount', 1.25) inv";
	push @runs, BgTest::start_psql($node, $sql);
}
$_->{h}->finish for @runs;

my @errors = grep { $_->{err} ne '' } @runs;
is(scalar @errors, 0, 'no session saw an error')
  or diag(join "\n", map { $_->{err} } @errors);
my $returned = 0;
$returned += scalar(split /\n/, $_->{out}) for @runs;
is($returned, $sessions * $calls, 'every call returned its invoice');

my $requests = $mock->posts;
my %seen;
$seen{ $_->{id} }++ for @$requests;
is(scalar @$requests, $sessions * $calls, 'the mock received one request per call');
is(scalar(grep { $_ != 1 } values %seen), 0, 'no request was sent twice');
my @bodies = grep { $_->{body} ne '{"mode":"amount","amount":1.25}' } @$requests;
is(scalar @bodies, 0, 'every body is exact');

$node->stop;
$mock->stop;
done_testing();
