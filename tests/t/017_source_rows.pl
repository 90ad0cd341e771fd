# One payment per source row, ever, and restores recognised (issue 19,
# routes 5 and 6): an UPDATE that moves a payouts row to another partition
# queues nothing; a dump restored with pg_restore --clean into the SAME
# database (same system identifier, same database OID) sends nothing of what
# was pending until released, then sends it once; a data-only restore (COPY)
# of the payouts tables into the same database queues nothing.  Each check
# counts the POSTs the mock received.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $mock = BgTest->start_mock;
my $node = $mock->new_node('source');
BgTest::worker_pid($node);

sub journal_rows
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM billogram_requests WHERE billogram_id = '$id'");
}

# A partitioned payouts table: the primary key contains the partition key,
# as PostgreSQL requires, so a row that moves changes its primary key.
$node->safe_psql('postgres', q{
	CREATE TABLE payouts (id int, region text, invoice text NOT NULL, amount numeric(12, 2),
	                      PRIMARY KEY (id, region)) PARTITION BY LIST (region);
	CREATE TABLE payouts_se PARTITION OF payouts FOR VALUES IN ('se');
	CREATE TABLE payouts_no PARTITION OF payouts FOR VALUES IN ('no');
	CREATE TRIGGER pay AFTER INSERT ON payouts FOR EACH ROW
	    EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount');
	INSERT INTO payouts VALUES (1, 'se', 'srcMove1', 10), (2, 'se', 'srcMove2', 20);
});
ok(BgTest::wait_settled($node), 'the first payments are sent');
is_deeply($mock->post_counts(qr/^srcMove/), { srcMove1 => 1, srcMove2 => 1 }, 'once each');
is($node->safe_psql('postgres',
	"SELECT source_table || ' ' || source_key::text FROM billogram_requests WHERE billogram_id = 'srcMove1'"),
	'public.payouts {"id": "1", "region": "se"}', 'the journal names the root table and the key');

# route 5: the move
my ($state, $out, $err) = BgTest::call($node, "UPDATE payouts SET region = 'no' WHERE id = 1");
is($state, '', 'the UPDATE that moves a row succeeds');
like($err, qr/a row of public\.payouts moved to partition payouts_no by an UPDATE; nothing was queued/,
	'and says that nothing was queued');
is($node->safe_psql('postgres', "SELECT count(*) FROM payouts_no WHERE id = 1"), '1', 'the row moved');
is(journal_rows('srcMove1'), '1', 'no second journal row');
# an UPDATE that moves nothing, and a real insert into the other partition
$node->safe_psql('postgres', q{
	UPDATE payouts SET amount = 21 WHERE id = 2;
	INSERT INTO payouts VALUES (3, 'no', 'srcNew3', 30);
});
ok(BgTest::wait_settled($node), 'the queue drains');
is_deeply($mock->post_counts(qr/^src/), { srcMove1 => 1, srcMove2 => 1, srcNew3 => 1 },
	'the moved row was not paid again; a new row in the new partition was paid');

# route 6, same database: a row pending at dump time (due in an hour)
$node->safe_psql('postgres', q{
	BEGIN;
	INSERT INTO payouts VALUES (4, 'se', 'srcPending4', 40);
	UPDATE billogram_requests SET next_attempt_at = now() + interval '1 hour'
	 WHERE billogram_id = 'srcPending4';
	COMMIT;
});
my $instance = $node->safe_psql('postgres', 'SELECT id FROM billogram_instance');
my $dboid = $node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'postgres'");
my $dump = $node->basedir . '/same.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'pg_dump with a payment pending');
# pg_restore --clean cannot drop the partitions' inherited key constraints
# (a known pg_dump limitation, harmless: the tables are dropped anyway);
# any other error fails the test
my ($restore_out, $restore_err) = ('', '');
IPC::Run::run([ 'pg_restore', '--clean', '--if-exists', '-d', $node->connstr('postgres'), $dump ],
	'>', \$restore_out, '2>', \$restore_err);
my @restore_errors = grep { !/cannot drop inherited constraint/ } $restore_err =~ /^pg_restore: error: .*$/mg;
is_deeply(\@restore_errors, [], 'pg_restore --clean into the same database')
  or diag($restore_err);
is($node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = 'postgres'"),
	$dboid, 'the same database');
my $new_instance = $node->safe_psql('postgres', 'SELECT id FROM billogram_instance');
isnt($new_instance, $instance, 'the extension made anew has an identity of its own');
# make the restored row due at once: only its identity keeps it from being sent
$node->safe_psql('postgres',
	"UPDATE billogram_requests SET next_attempt_at = now() WHERE billogram_id = 'srcPending4' AND state = 'pending'");
ok($node->poll_query_until('postgres',
	"SELECT state = 'held' FROM billogram_requests WHERE billogram_id = 'srcPending4'"),
	'the restored pending row is held');
ok($node->wait_for_log(qr/1 request\(s\) made in another cluster or database are held, not sent/),
	'and the worker logs it');
is(scalar @{ $mock->posts('srcPending4') }, 0, 'nothing was sent');
is($node->safe_psql('postgres', 'SELECT count(*) FROM billogram_keys'), '5',
	'the keys came back with the dump (four rows, and the moved row\'s new key)');

is($node->safe_psql('postgres', 'SELECT billogram_release_held()'), '1', 'released');
ok(BgTest::wait_settled($node), 'it is sent');
is(scalar @{ $mock->posts('srcPending4') }, 1, 'once');
is($node->safe_psql('postgres',
	"SELECT state || ' ' || (made_in_instance = '$new_instance')::int FROM billogram_requests WHERE billogram_id = 'srcPending4'"),
	'done 1', 'done, and now this installation\'s');

# route 6, data-only: the payouts tables' rows COPYed in again
my $data = $node->basedir . '/payouts.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-a', '-t', 'payouts*', '-f', $data, '-d', $node->connstr('postgres') ],
	'pg_dump of the payouts data');
$node->safe_psql('postgres', 'TRUNCATE payouts');
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM billogram_requests');
$node->command_ok([ 'pg_restore', '-a', '-d', $node->connstr('postgres'), $data ],
	'data-only pg_restore, triggers enabled');
is($node->safe_psql('postgres', 'SELECT count(*) FROM payouts'), '4', 'the rows are back');
is($node->safe_psql('postgres', 'SELECT count(*) FROM billogram_requests'), $before,
	'and nothing was queued, the moved row included');
ok(BgTest::wait_settled($node), 'nothing waits');
is_deeply($mock->post_counts(qr/^src/),
	{ srcMove1 => 1, srcMove2 => 1, srcNew3 => 1, srcPending4 => 1 },
	'every source row was paid exactly once');

# two sessions inserting the same row at once make one journal row: the
# second waits for the first, then fails on the table's own key
$node->safe_psql('postgres', "DELETE FROM payouts WHERE id = 4");
my $s1 = BgTest::start_psql($node,
	"BEGIN; INSERT INTO payouts VALUES (5, 'se', 'srcRace5', 5); SELECT pg_sleep(3); COMMIT;");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'BEGIN; INSERT INTO payouts%' AND wait_event = 'PgSleep'")
  or die 'the first session did not insert';
my $s2 = BgTest::start_psql($node, "INSERT INTO payouts VALUES (5, 'se', 'srcRace5', 5)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO payouts%'")
  or die 'the second session did not wait';
$s1->{h}->finish;
$s2->{h}->finish;
like($s2->{err}, qr/duplicate key value violates unique constraint "payouts_se_pkey"/,
	'the second insert of the same row fails on the table\'s own key');
is(journal_rows('srcRace5'), '1', 'one journal row');
ok(BgTest::wait_settled($node), 'sent');
is(scalar @{ $mock->posts('srcRace5') }, 1, 'once');

$node->stop;
$mock->stop;
done_testing();
