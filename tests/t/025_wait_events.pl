# What pg_stat_activity shows while billogram waits: on PostgreSQL 17 and
# later the extension's own wait events, the worker idle (BillogramIdle) or
# waiting on Billogram (BillogramHttp) and a session waiting for its call's
# answer (BillogramCall); before 17 the generic "Extension" for all three.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = BgTest->start_mock;
my $node = $mock->new_node('wait_events');
BgTest::worker_pid($node);

my $named = $node->safe_psql('postgres', 'SHOW server_version_num') >= 170000;
my %event = $named
  ? (idle => 'BillogramIdle', http => 'BillogramHttp', call => 'BillogramCall')
  : (idle => 'Extension', http => 'Extension', call => 'Extension');
note $named ? 'PostgreSQL 17 or later: named wait events' : 'before 17: Extension';

my $worker = "SELECT wait_event_type || ':' || wait_event FROM pg_stat_activity "
  . "WHERE backend_type = 'billogram worker'";
ok($node->poll_query_until('postgres', $worker, "Extension:$event{idle}"),
	"the idle worker waits on Extension:$event{idle}");

# a GET the mock answers after 8 s: the worker waits on the exchange, the
# caller on the worker's answer
my $call = BgTest::start_psql($node, "SELECT billogram_get_invoice('slow8000w1') ->> 'id'");
ok($node->poll_query_until('postgres', $worker, "Extension:$event{http}"),
	"with a request in flight it waits on Extension:$event{http}");
ok($node->poll_query_until('postgres',
		"SELECT wait_event_type || ':' || wait_event FROM pg_stat_activity "
		  . "WHERE query LIKE 'SELECT billogram_get_invoice(%'",
		"Extension:$event{call}"),
	"the caller waits on Extension:$event{call}");
$call->{h}->finish;
is($call->{out}, "slow8000w1\n", 'and gets its answer');
ok($node->poll_query_until('postgres', $worker, "Extension:$event{idle}"),
	"then the worker is idle again: Extension:$event{idle}");

$node->stop;
done_testing();
