# A copy of the database never pays on its own: a dump of a database with
# payments pending, restored into a second cluster whose worker reaches the
# API, sends nothing; the rows are held until an operator releases them,
# then each is sent exactly once.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = BgTest->start_mock;

# Production: the API is unreachable (nothing listens on port 1), so its
# queue stays pending.
my $prod = $mock->new_node('prod', url => 'https://localhost:1/api/v2');
$prod->safe_psql('postgres', q{
	CREATE TABLE payouts (id serial PRIMARY KEY, invoice text NOT NULL, amount numeric);
	CREATE TRIGGER pay AFTER INSERT ON payouts FOR EACH ROW
	    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount');
	INSERT INTO payouts (invoice, amount) SELECT 'copy' || i, i FROM generate_series(1, 5) i;
});
$prod->poll_query_until('postgres',
	"SELECT count(*) = 5 FROM billogram_requests WHERE state = 'pending' AND error IS NOT NULL")
  or die 'the rows were not tried';
my $dump = $prod->basedir . '/prod.dump';
$prod->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $prod->connstr('postgres') ],
	'pg_dump of a database with payments pending');
my $prod_system = $prod->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
$prod->stop;

# Staging: another cluster, the same configuration, the API up.  The dump
# is restored while its worker runs.
my $staging = PostgreSQL::Test::Cluster->new('staging');
$staging->init;
$staging->append_conf('postgresql.conf', $mock->config);
$staging->start;
BgTest::worker_pid($staging);
$staging->command_ok([ 'pg_restore', '-d', $staging->connstr('postgres'), $dump ],
	'restored into a second cluster');
isnt($staging->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()'),
	$prod_system, 'a cluster of its own');

ok($staging->poll_query_until('postgres',
	"SELECT count(*) = 5 FROM billogram_requests WHERE state = 'held'"),
	'the restored rows are held');
ok($staging->wait_for_log(qr/5 request\(s\) made in another cluster or database are held, not sent/),
	'and the log says so, with what to do');
is($staging->safe_psql('postgres',
	"SELECT requests || ' ' || (held_since IS NOT NULL) FROM billogram_queue_status WHERE state = 'held'"),
	'5 true', 'the status view shows how many and since when');
is(scalar @{ $mock->posts }, 0, 'nothing was sent by the copy');

# Payments made on staging itself are its own and are sent.
$staging->safe_psql('postgres', "INSERT INTO payouts (invoice, amount) VALUES ('stagingown1', 1)");
ok(BgTest::wait_settled($staging), 'its own payment is sent');
is(scalar @{ $mock->posts('stagingown1') }, 1, 'once');
is(scalar @{ $mock->posts }, 1, 'and nothing else');

# The operator checked that production is stopped: release.
is($staging->safe_psql('postgres', 'SELECT billogram_release_held()'), '5', 'five released');
ok(BgTest::wait_settled($staging), 'they are sent');
is_deeply($mock->post_counts(qr/^copy/), { map { ("copy$_" => 1) } 1 .. 5 },
	'each exactly once');
is($staging->safe_psql('postgres',
	"SELECT string_agg(DISTINCT state, ',') FROM billogram_requests WHERE billogram_id LIKE 'copy%'"),
	'done', 'and done');
like($staging->safe_psql('postgres',
	"SELECT resolution FROM billogram_requests WHERE billogram_id = 'copy1'"),
	qr/^released by \S+ at .* \(held since .*, made in system -?\d+ database \d+ instance (?:[0-9a-f-]{36}|unknown)\)$/,
	'the release is journaled with who did it and where the row was made');

done_testing();
