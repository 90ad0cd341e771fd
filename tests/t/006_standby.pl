# A hot standby sends nothing: its worker starts only on promotion, and then
# sends the queued payments it inherited.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = BgTest->start_mock;
my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $mock->config);
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION billogram;
	CREATE TABLE payments (id bigserial PRIMARY KEY, invoice text NOT NULL, amount numeric(12, 2));
	CREATE TRIGGER register_payout AFTER INSERT ON payments FOR EACH ROW
		EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount');
});
BgTest::worker_pid($primary);
$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;

# rows queued on the primary while the API is down stay pending
$mock->fault('{"mode":"down"}');
$primary->safe_psql('postgres',
	"INSERT INTO payments (invoice, amount) SELECT 'stby' || g, 1 FROM generate_series(1, 5) g");
$primary->wait_for_catchup($standby);
$primary->stop('immediate');
$mock->fault('{"mode":"none"}');

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is( $standby->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'billogram worker'"),
	'0', 'no billogram worker runs on the standby');
my ($state, undef, $err) = BgTest::call($standby,
	"SELECT billogram_credit_payment('stbysync', 'amount', 1)");
is($state, '55000', 'a synchronous call on the standby: 55000');
like($err, qr/HINT:.*recovery/, 'with a hint about recovery');
sleep 2;
is(scalar @{ $mock->posts }, 0, 'the standby sent nothing while in recovery');

$standby->promote;
BgTest::worker_pid($standby);
ok(BgTest::wait_settled($standby), 'after promotion the inherited rows settle');
my $states = $standby->safe_psql('postgres',
	"SELECT string_agg(DISTINCT state, ',') FROM billogram_requests WHERE billogram_id LIKE 'stby%'");
like($states, qr/^(done|done,in_doubt|in_doubt)$/, "they end done or in_doubt ($states)");
my %n;
$n{ $_->{id} }++ for @{ $mock->posts };
is(scalar(grep { $_ > 1 } values %n), 0, 'none sent twice');
is( scalar(keys %n),
	$standby->safe_psql('postgres',
		"SELECT count(*) FROM billogram_requests WHERE billogram_id LIKE 'stby%' AND state = 'done'"),
	'the promoted server sent the pending ones');

$standby->stop;
$mock->stop;
done_testing();
