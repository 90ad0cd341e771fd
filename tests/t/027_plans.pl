# The plans over a journal with history: no statement the worker runs, its
# own or one inside the extension's functions it calls, and none a backend
# runs for the trigger, the queueing function or an operator's tool, reads
# a whole journal table to find its few rows.  Every other test passes
# against a plan that walks the journal on each batch, only slowly (an
# early version of the readings' claim did, at 3 ms a call); this one
# refuses it.
#
# auto_explain, preloaded beside the extension, logs every plan executed as
# JSON: the worker's kept statements' generic plans, the custom and generic
# plans of the PL/pgSQL and SQL functions' statements, and what a backend
# runs for the sessions tagged plan_workload below (the test's own checks
# are not judged).  The journal holds a history of finished rows and the
# ledger their invoices and 25,000 more (whose rows were purged), analysed
# before the worker plans anything, so that a walk of a table costs what it
# would in production and the planner takes an index where one serves.
#
# A walk of a whole partial index is allowed: those indexes hold only the
# rows waiting for work (pending, to be settled), never the history.
#
# It runs twice, over two histories: 100,000 rows on 25,000 invoices, as a
# journal of credit invoices' first payments looks; and 30,000 on three, as
# one paying installments on a few invoices looks.  The second's statistics
# say that an invoice's rows are a third of the journal: a generic plan
# that finds an invoice's rows in id order walked the whole primary key
# then (the readings' lock did, for every invoice read).
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgTest;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = BgTest->start_mock;
my $node = $mock->new_node('plans', extra => <<'CONF');
shared_preload_libraries = 'billogram, auto_explain'
auto_explain.log_min_duration = 0
auto_explain.log_nested_statements = on
auto_explain.log_format = json
log_line_prefix = '%m [%p] <%b|%a> '
billogram.settle_time = '2s'
CONF
BgTest::worker_pid($node);

sub query { return $node->safe_psql('postgres', $_[0]); }

# A statement whose plans, and its functions' and triggers', are judged.
sub workload { return query("SET application_name = 'plan_workload'; $_[0]"); }

my %partial = map { $_ => 1 } split /\n/, query(q{
	SELECT indexrelid::regclass::text FROM pg_index
	 WHERE indpred IS NOT NULL AND indrelid::regclass::text LIKE 'billogram_%'});
note 'partial indexes: ' . join(', ', sort keys %partial);

# The scans of the extension's tables that read a whole table: a sequential
# scan, or a scan of a whole index that is not partial.
sub whole_walks
{
	my ($plan) = @_;
	my @found;
	my $rel = $plan->{'Relation Name'} // '';
	if ($rel =~ /^billogram_(requests|keys|ledger|events)$/)
	{
		push @found, "a sequential scan of $rel"
		  if $plan->{'Node Type'} eq 'Seq Scan';
		push @found, "a walk of all of $plan->{'Index Name'}"
		  if $plan->{'Node Type'} =~ /^Index (Only )?Scan$/
		  && !defined $plan->{'Index Cond'} && !$partial{ $plan->{'Index Name'} };
	}
	push @found, whole_walks($_) for @{ $plan->{Plans} // [] };
	return @found;
}

# One run of the paths over a history of $rows finished payments on
# $invoices invoices, and the judgement of every plan they executed.
sub run_over_history
{
	my ($label, $invoices, $rows) = @_;

	# --- history: finished payments, their keys and the ledger's invoices ---
	query(qq{
		TRUNCATE billogram_requests, billogram_keys, billogram_ledger, billogram_events;
		DROP TABLE IF EXISTS payments;
		INSERT INTO billogram_requests (origin, billogram_id, mode, amount, request_body,
				state, attempts, sent_at, finished_at, http_status, created_by,
				made_in_system, made_in_database, made_in_instance, baseline, event_uuids)
		SELECT 'trigger', 'hist' || (g % $invoices), 'amount', 1, '{"mode":"amount","amount":1}',
				'done', 1, now() - interval '1 day', now() - interval '1 day', 200, session_user,
				(SELECT system_identifier FROM pg_control_system()),
				(SELECT oid FROM pg_database WHERE datname = current_database()),
				(SELECT id FROM billogram_instance), '{}', ARRAY[gen_random_uuid()::text]
		  FROM generate_series(1, $rows) g;
		INSERT INTO billogram_keys (kind, key, request_id)
		SELECT 'source', 'public.old_payments {"id":"' || id || '"}', id FROM billogram_requests;
		INSERT INTO billogram_ledger (billogram_id, remaining_sum, events, seen_at, seen_by)
		SELECT billogram_id, -1000 + count(*), jsonb_object_agg(gen_random_uuid(), id), now(), max(id)
		  FROM billogram_requests GROUP BY billogram_id;
		-- and the invoices whose rows billogram_purge() took: the ledger keeps them
		INSERT INTO billogram_ledger (billogram_id, remaining_sum, events, seen_at, seen_by)
		SELECT 'purged' || g, 0, jsonb_build_object(gen_random_uuid(), 1), now(), NULL
		  FROM generate_series(1, 25000) g;
		ANALYZE billogram_requests, billogram_keys, billogram_ledger;
		CREATE TABLE payments (id bigserial PRIMARY KEY, invoice text NOT NULL, amount numeric(12, 2));
		CREATE TRIGGER register_payout AFTER INSERT ON payments FOR EACH ROW
			EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount');
	});

	# The worker plans its statements once per process: a new one plans them
	# over the history.  What it runs as it starts (recovery) is judged too.
	my $from = -s $node->logfile;
	$node->restart;
	BgTest::worker_pid($node);

	# --- the worker's paths, each taken a few times ---
	# first payments, read before they are sent, and second ones on the same
	# invoices, claimed behind them
	workload("INSERT INTO payments (invoice, amount) SELECT 'new' || (g % 60), 1 FROM generate_series(1, 120) g");
	# payments on invoices the ledger knows, claimed with its baseline
	workload("INSERT INTO payments (invoice, amount) SELECT 'hist' || g, 1 FROM generate_series(1, 60) g");
	ok(BgTest::wait_settled($node), "$label: the queued payments were sent");
	# synchronous calls, with and without an idempotency key
	workload("SELECT count(billogram_credit_payment('sync' || g, 'amount', 1)) FROM generate_series(1, 10) g");
	workload("SELECT count(billogram_credit_payment('key' || g, 'amount', 1, 'plan-key-' || g)) "
		  . "FROM generate_series(1, 10) g");
	# unknown outcomes, settled by readings of their invoices
	workload("SELECT billogram_enqueue_credit_payment('a500plan' || g, 'amount', 1) FROM generate_series(1, 5) g");
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 5 FROM billogram_requests WHERE billogram_id LIKE 'a500plan%' "
			  . "AND state = 'done' AND settle_at IS NULL"),
		"$label: the unknown outcomes were settled from readings");
	# a payment that did not arrive: in_doubt, not_applied, then resent by an
	# operator, once a fresh reading shows its invoice unchanged (and dropped
	# again: the mock drops every payment to an ndrop invoice)
	workload("SELECT billogram_enqueue_credit_payment('ndropplan1', 'amount', 1)");
	ok($node->poll_query_until('postgres',
			"SELECT evidence ->> 'verdict' = 'not_applied' AND settle_at IS NULL "
			  . "FROM billogram_requests WHERE billogram_id = 'ndropplan1'"),
		"$label: a dropped payment was found not applied");
	# the operator's tools, as a DBA runs them over the journal's history
	# (billogram_queue_status counts every row by state: it reads the whole
	# journal by design, and is not run here)
	workload(q{
		SELECT count(*) FROM billogram_in_doubt;
		SELECT count(*) FROM billogram_health;
		SELECT count(*) FROM billogram_metrics;
		SELECT billogram_release_held(), billogram_fail_held();
		SELECT billogram_purge('2 days');
		SELECT id FROM billogram_resolve(
			(SELECT id FROM billogram_requests WHERE billogram_id = 'ndropplan1'), 'resend');
	});
	ok($node->poll_query_until('postgres',
			"SELECT attempts = 2 AND evidence ->> 'verdict' = 'not_applied' AND settle_at IS NULL "
			  . "FROM billogram_requests WHERE billogram_id = 'ndropplan1'"),
		"$label: sent again by billogram_resolve, and again not applied");
	is(query("SELECT count(*) FROM billogram_requests WHERE state <> 'done' AND billogram_id <> 'ndropplan1'"),
		'0', "$label: every other payment of the run is done");

	# --- the plans ---
	my $log = slurp_file($node->logfile, $from);
	my (%seen, @walks);
	while ($log =~ /^\S+ \S+ \S+ \[\d+\] <(billogram worker|client backend)\|(\S*)> LOG:  duration: [\d.]+ ms  plan:\n(.*?)(?=^\d{4}-|\z)/msg)
	{
		my ($who, $app, $json) = ($1, $2, $3);
		next if $who eq 'client backend' && $app ne 'plan_workload';
		my $explain = decode_json($json);
		(my $text = $explain->{'Query Text'}) =~ s/\s+/ /g;
		$seen{"$who: $text"}++;
		push @walks, map { "$_ in: " . substr($text, 0, 200) } whole_walks($explain->{Plan});
	}
	note "$label: " . scalar(keys %seen) . ' statements seen:';
	note sprintf('%5d  %s', $seen{$_}, substr($_, 0, 150)) for sort keys %seen;

	# What was judged: the statements of each path, by a piece of their text.
	for my $path (
		[ 'billogram worker', 'the claim', qr/SET state = 'sending'/ ],
		[ 'billogram worker', 'the outcomes', qr/^WITH o AS \(SELECT \* FROM unnest/ ],
		[ 'billogram worker', 'the readings due', qr/^SELECT p\.billogram_id, p\.id FROM \S+ p WHERE p\.state = 'pending'/ ],
		[ 'billogram worker', "the readings' claim", qr/^WITH seen AS/ ],
		[ 'billogram worker', 'the ledger', qr/^INSERT INTO \S+billogram_ledger/ ],
		[ 'billogram worker', 'the synchronous calls', qr/^INSERT INTO \S+billogram_requests .* FROM unnest/ ],
		[ 'billogram worker', 'the settling', qr/^UPDATE \S+billogram_requests SET state = CASE WHEN verdict/ ],
		[ 'client backend', "the trigger's row and its key", qr/^WITH k AS \(INSERT INTO \S+billogram_keys/ ],
		[ 'client backend', "the queueing function's row", qr/^INSERT INTO \S+billogram_requests .*'pending'/ ],
		[ 'client backend', "a used idempotency key's lookup", qr/^SELECT k\.request_id, r\.state/ ],
		[ 'client backend', 'billogram_in_doubt', qr/^SELECT count\(\*\) FROM billogram_in_doubt/ ],
		[ 'client backend', 'billogram_purge', qr/WITH gone AS \( DELETE FROM \S*billogram_requests/ ],
		[ 'client backend', 'billogram_resolve', qr/^UPDATE \S*billogram_requests\s+SET state = CASE action/ ])
	{
		my ($who, $name, $re) = @$path;
		ok((grep { /^\Q$who\E: / && substr($_, length($who) + 2) =~ $re } keys %seen),
			"$label: planned and judged: $name");
	}
	is(join("\n", @walks), '', "$label: no plan reads a whole journal table or a whole index of one");
	return;
}

run_over_history('many invoices', 25000, 100000);
run_over_history('few invoices', 3, 30000);

$node->stop;
done_testing();
