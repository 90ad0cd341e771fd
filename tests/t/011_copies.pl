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


# A row the other cluster was sending when the copy was made, restored
# while the worker runs: it may have been sent, and nothing here knew its
# invoice before, so nobody reads it.  It is in_doubt with a verdict of its
# own, and advice that names the calls to make, not a reading that never
# comes.
$staging->safe_psql('postgres', qq{
	INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body,
	                                state, attempts, sent_at, made_in_system, made_in_database)
	VALUES ('enqueue', 'copysending1', 'amount', 7, '{"mode":"amount","amount":7}',
	        'sending', 1, now(), $prod_system, 1)});
ok($staging->poll_query_until('postgres',
	"SELECT state = 'in_doubt' FROM billogram_requests WHERE billogram_id = 'copysending1'"),
	'a row caught sending in a copy becomes in_doubt');
ok($staging->wait_for_log(qr/1 found in state sending or still being checked there are now in_doubt/),
	'and the log says so');
is($staging->safe_psql('postgres',
	"SELECT verdict || ' ' || (next_check_at IS NULL) FROM billogram_in_doubt WHERE billogram_id = 'copysending1'"),
	'inherited true', 'its verdict is inherited, and no reading is due');
my $copy_id = $staging->safe_psql('postgres',
	"SELECT id FROM billogram_requests WHERE billogram_id = 'copysending1'");
like($staging->safe_psql('postgres',
	"SELECT advice FROM billogram_in_doubt WHERE billogram_id = 'copysending1'"),
	qr/^not checked: it came from another database, cluster or installation while that server was sending it, so it may have been sent; .*check it at Billogram, then billogram_resolve\($copy_id, 'mark_done'\) or billogram_resolve\($copy_id, 'mark_failed'\)$/,
	'the advice names the calls to make, with its id');
unlike($staging->safe_psql('postgres',
	"SELECT advice FROM billogram_in_doubt WHERE billogram_id = 'copysending1'"),
	qr/read again at/, 'and promises no reading');
is(scalar @{ $mock->requests('copysending1') }, 0, 'nothing was sent or read for it');
is($staging->safe_psql('postgres',
	"SELECT (billogram_resolve($copy_id, 'mark_failed')).state"),
	'failed', 'the operator resolves it');

# A row of production's own, made by hand in a state its worker left it:
# the columns and values given, and where it was made.
sub prod_row
{
	my ($id, $amount, $state, %more) = @_;
	my @cols = sort keys %more;
	$prod->safe_psql('postgres', qq{
		INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body,
		                                state, attempts, sent_at, made_in_system, made_in_database,
		                                made_in_instance} . join('', map { ", $_" } @cols) . qq{)
		SELECT 'enqueue', '$id', 'amount', $amount, '{"mode":"amount","amount":$amount}',
		       '$state', 1, now(), (SELECT system_identifier FROM pg_control_system()),
		       (SELECT oid FROM pg_database WHERE datname = current_database()),
		       (SELECT id FROM billogram_instance)} . join('', map { ", $more{$_}" } @cols));
}

# Production's dump, taken now (what) and production stopped, restored
# into a new cluster named name while its worker runs.
sub restored_copy
{
	my ($name, $what) = @_;
	my $dump = $prod->basedir . "/$name.dump";
	$prod->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $prod->connstr('postgres') ],
		"pg_dump of a database with $what");
	$prod->stop;
	my $copy = PostgreSQL::Test::Cluster->new($name);
	$copy->init;
	$copy->append_conf('postgresql.conf', $mock->config);
	$copy->start;
	BgTest::worker_pid($copy);
	$copy->command_ok([ 'pg_restore', '-d', $copy->connstr('postgres'), $dump ],
		"restored into $name while its worker runs");
	return $copy;
}

# A row's state, verdict, whether a reading is due and why it is in doubt,
# as a copy shows them.
sub doubt
{
	my ($node, $id) = @_;
	return $node->safe_psql('postgres',
		"SELECT state || ' ' || verdict || ' ' || (next_check_at IS NULL) || ' ' || reason "
		  . "FROM billogram_requests LEFT JOIN billogram_in_doubt USING (id) "
		  . "WHERE billogram_requests.billogram_id = '$id'");
}

# The same row restored with a dump while the copy's worker runs: the
# restore makes the extension, and the worker's first batch over the new
# journal looked for rows its own restart left 'sending' before it looked
# for rows from elsewhere, so it read this one's invoice and settled it
# as if it had sent it (found by the chaos run, tests/t/030_chaos.pl).
$prod->start;
prod_row('copysending2', 8, 'sending');
my $staging2 = restored_copy('staging2', 'a payment being sent');
ok($staging2->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM billogram_requests WHERE state IN ('pending', 'sending')"),
	'nothing restored is left pending or sending');
is(doubt($staging2, 'copysending2'),
	'in_doubt inherited true found in state sending in a copy of another database, cluster or installation',
	'the row restored in sending is in_doubt as inherited, with no reading due');
is(scalar @{ $mock->requests('copysending2') }, 0, 'nothing was sent or read for it');
$staging2->stop;

# A row production was still settling when the dump was taken: in_doubt,
# its invoice read until a verdict is reached (settle_at set).  The verdict
# is production's to reach: in a copy whose worker runs it is in_doubt as
# inherited, like a row caught sending, and nothing reads its invoice.
# The copy's worker used to read and settle it (the chaos run saw one
# become done in a copy; a not_applied verdict would have advised the
# copy's operator to resend it).  Production cannot reach the API: its
# readings fail, and with a long settle_time the row stays being checked.
$prod->append_conf('postgresql.conf', "billogram.settle_time = '1h'");
$prod->start;
prod_row('copychecking1', 9, 'in_doubt', finished_at => 'now()', settle_at => 'now()',
	error => q{'{"kind": "no_reply", "message": "the connection closed after the request was sent", "may_have_reached_billogram": true}'},
	baseline => q{'{"remaining_sum": -1000.00, "events": []}'});
ok($prod->poll_query_until('postgres', q{
	SELECT evidence ->> 'verdict' = 'checking' AND settle_at IS NOT NULL
	  FROM billogram_requests WHERE billogram_id = 'copychecking1'}),
	'production is settling the row: its invoice could not be read yet');
my $staging3 = restored_copy('staging3', 'a payment being settled');
ok($staging3->poll_query_until('postgres',
	"SELECT settle_at IS NULL FROM billogram_requests WHERE billogram_id = 'copychecking1'"),
	'no reading of the row is due in the copy');
is(doubt($staging3, 'copychecking1'),
	'in_doubt inherited true the connection closed after the request was sent',
	'it is in_doubt as inherited, with no reading due and the reason it was in doubt');
is($staging3->safe_psql('postgres', q{
	SELECT (evidence -> 'original' ->> 'verdict') || ' ' || (evidence -> 'original' ? 'checked_at')
	  FROM billogram_requests WHERE billogram_id = 'copychecking1'}),
	'checking true', "what production had found is kept, under 'original'");
my $checking_id = $staging3->safe_psql('postgres',
	"SELECT id FROM billogram_requests WHERE billogram_id = 'copychecking1'");
like($staging3->safe_psql('postgres',
	"SELECT advice FROM billogram_in_doubt WHERE billogram_id = 'copychecking1'"),
	qr/^not checked: it came from another database, cluster or installation while that server was still reading its invoice to settle it, so it may have been sent; .*check it at Billogram, then billogram_resolve\($checking_id, 'mark_done'\) or billogram_resolve\($checking_id, 'mark_failed'\)$/,
	'the advice names the calls to make, with its id');
# copysending2 too: production's restart made it in_doubt, and it was
# settling it as well
is(doubt($staging3, 'copysending2'),
	'in_doubt inherited true the worker stopped while the request was being sent',
	'so is the row production found in sending after its restart');
ok($staging3->wait_for_log(qr/2 found in state sending or still being checked there are now in_doubt, not checked here/),
	'the log counts both');
is($staging3->safe_psql('postgres',
	"SELECT value FROM billogram_metrics WHERE metric = 'billogram_in_doubt_created_total'"),
	'2', 'and so does billogram_in_doubt_created_total');
is(scalar @{ $mock->requests('copychecking1') } + scalar @{ $mock->requests('copysending2') }, 0,
	'the copy never read their invoices');
$staging3->stop;

done_testing();
