# The sanitizer run is real: the servers of the suite have the ASan runtime
# mapped, the billogram module they load is instrumented, and a fault in
# instrumented code kills the backend with a report.  Runs only when the
# suite runs with BG_SANITIZE=1 (tests/suite.sh builds the canary module).
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

plan skip_all => 'not a sanitizer run (make test SANITIZE=1)'
  unless ($ENV{BG_SANITIZE} // '') eq '1' && $ENV{BG_CANARY};

# This test's faults are on purpose: report them here, not in the suite's
# report directory, which must stay empty.
my $reports = PostgreSQL::Test::Utils::tempdir('reports');
local $ENV{ASAN_OPTIONS} = $ENV{ASAN_OPTIONS} =~ s/log_path=[^:]*/log_path=$reports\/asan/r;
local $ENV{UBSAN_OPTIONS} = $ENV{UBSAN_OPTIONS} =~ s/log_path=[^:]*/log_path=$reports\/ubsan/r;

my $mock = BgTest->start_mock;
my $node = $mock->new_node('sanitizer');

my $worker = BgTest::worker_pid($node);
my %maps = (
	'the worker' => slurp_file("/proc/$worker/maps"),
	# the backend's own, read in the session that made a payment
	'a backend' => $node->safe_psql('postgres',
		"SELECT pg_read_file('/proc/self/maps') FROM billogram_credit_payment('san1', 'amount', 5)"));

for my $who (sort keys %maps)
{
	my $m = $maps{$who};
	like($m, qr{/libasan\.so}, "$who runs with the ASan runtime");
	my ($so) = $m =~ m{(\S*/billogram\.so)$}m;
	ok($so, "$who has billogram.so loaded");
	my $bin = slurp_file($so);
	ok(index($bin, '__asan_report_load') >= 0 && index($bin, '__ubsan_handle_') >= 0,
		"$who: its billogram.so is built with ASan and UBSan");
}

$node->safe_psql('postgres', <<"SQL");
CREATE FUNCTION canary_heap_overflow(int) RETURNS int
	AS '$ENV{BG_CANARY}' LANGUAGE C STRICT;
CREATE FUNCTION canary_int_overflow(int) RETURNS int
	AS '$ENV{BG_CANARY}' LANGUAGE C STRICT;
SQL

# Each fault must end the backend (the postmaster then restarts everything)
# and leave a report naming the fault and the faulty function.  ASan writes
# its reports to log_path; gcc's UBSan runtime, loaded beside ASan, ignores
# UBSAN_OPTIONS' log_path and writes to stderr, which is the server log.
sub fault_is_caught
{
	my ($sql, $what, $function) = @_;
	my $log_offset = -s $node->logfile;
	my ($rc, $out, $err) = $node->psql('postgres', $sql);
	like($err, qr/server closed the connection unexpectedly/,
		"$what: the backend died");
	$node->poll_query_until('postgres', 'SELECT 1', '1')
	  or die 'server did not come back';
	# with both runtimes loaded, either may write the report
	my @files = glob("$reports/*");
	my $text = join '', (map { slurp_file($_) } @files),
	  slurp_file($node->logfile, $log_offset);
	like($text, $what eq 'heap overflow'
		? qr/ERROR: AddressSanitizer: heap-buffer-overflow/
		: qr/runtime error: signed integer overflow/,
		"$what: reported");
	like($text, qr/$function/, "$what: the report names $function");
	unlink @files;
}

fault_is_caught('SELECT canary_heap_overflow(16)', 'heap overflow',
	'canary_heap_overflow');
fault_is_caught('SELECT canary_int_overflow(2147483647)', 'integer overflow',
	'canary_int_overflow');

# and the extension works again after the restarts
BgTest::worker_pid($node);
is($node->safe_psql('postgres',
		"SELECT inv->>'id' FROM billogram_credit_payment('san2', 'amount', 5) inv"),
	'san2', 'a payment goes through after the restarts');

done_testing();
