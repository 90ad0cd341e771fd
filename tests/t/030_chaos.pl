# The books balance under chaos (issue 24): from one seed, a schedule of
# payments made every way there is (synchronous calls in both modes, with
# retries under the same idempotency key, queued calls, trigger inserts of
# one row, many rows and COPY, a queued payment rolled back) and of faults
# (every fault the mock has, by invoice id and globally: 500 and dropped
# connections before and after applying, 429 and 503 with and without
# Retry-After, slow, cut and silent replies, the API down, its clock ahead
# and behind, callbacks late and twice, someone else paying; the worker
# killed or terminated, the server stopped with -m immediate, settings
# reloaded, and once the primary crashed and its synchronous standby
# promoted in its place, production from then on), run by six sessions at
# once.  Then, once the queue has settled, an operator acts on every
# in_doubt and held row as the views advise, checking the invoice at
# "Billogram" (the mock's record), and the journal is judged against the
# mock: per invoice, the done rows are the payments the mock applied
# through its API, in count and amounts.
#
# CHAOS_SEED names the schedule, printed first and with every failure.
# Without it (make test) the seed is 11: make test is a gate that a commit
# passes or not, so its schedule is the same every run (the timing between
# sessions, worker and mock still differs); make chaos explores a new seed
# each run (tests/chaos.sh) and replays one with SEED=n.  CHAOS_PAYMENTS
# sets the size (1000; make chaos runs 10000).  tests/t/BgChaos.pm makes the schedule and keeps the books.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use BgChaos;
use BgTest;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

# Not in the sanitizer pass: ASan's quarantine keeps freed memory (256 MB by
# default) and its shadow grows with it, so the worker's private memory
# says nothing there about what the extension keeps; and the pass would take
# five minutes more (it ran clean of findings when tried).
plan skip_all => 'the chaos run measures the worker\'s memory: plain build only'
  if ($ENV{BG_SANITIZE} // '') eq '1';

my $seed = $ENV{CHAOS_SEED} // 11;
my $payments = $ENV{CHAOS_PAYMENTS} // 1000;
diag("chaos seed $seed, $payments payments (replay: make chaos SEED=$seed CHAOS_PAYMENTS=$payments)");
my $started = time;

my $plan = BgChaos::schedule(seed => $seed, payments => $payments);
my $mock = BgTest->start_mock;
my $sign_key = 'chaos-sign-key-0123';
my $node = $mock->new_node('chaos', allows_streaming => 1, extra => <<"CONF");
max_connections = 40
# as initdb sets it: a primary made for streaming gets 1MB from the test
# module, which would make this another run
shared_buffers = '128MB'
# settle_time is what a DBA sets above the longest Billogram may take to
# apply a request after the connection ended; the mock's longest is its
# random fault's 3 s hold, so each setting the run uses is above that with
# a second to spare (BgChaos; below it a worker killed during the hold
# concluded not_applied before the mock applied the payment, seeds
# 186247448 and 685690583)
billogram.settle_time = '5s'
billogram.timeout = '5s'
billogram.retry_for = '10min'
billogram.callback_sign_key_file = '@{[ $mock->secret_file($sign_key) ]}'
CONF
$node->safe_psql('postgres', q{
	CREATE TABLE payouts (id bigserial, region text NOT NULL DEFAULT 'a',
	                      invoice text NOT NULL, amount numeric(12, 2), mode text NOT NULL,
	                      PRIMARY KEY (id, region))
		PARTITION BY LIST (region);
	CREATE TABLE payouts_a PARTITION OF payouts FOR VALUES IN ('a');
	CREATE TABLE payouts_b PARTITION OF payouts FOR VALUES IN ('b');
	CREATE TRIGGER pay AFTER INSERT ON payouts FOR EACH ROW
		EXECUTE FUNCTION billogram_payment_trigger('invoice', 'amount', 'mode');
});
my $dir = PostgreSQL::Test::Utils::tempdir('chaos');

# ---- the standby, promoted once (disruption 'promote') ----
# A streaming physical standby, replicated synchronously: the setting under
# which a DBA expects a failover to lose nothing.  The worker commits a
# row's 'sending' durably before the request leaves (src/batch.c), and with
# synchronous_standby_names that commit waits for the standby too; so
# anything the old primary's worker sent is on the standby at least as
# 'sending', which the promoted server's worker makes in_doubt and settles
# from the invoice (a physical standby has the primary's system identifier
# and billogram_instance: its rows are made here, not held as a copy's).
# Outcomes committed asynchronously may be lost with the primary; their rows
# are found 'sending' too.  Pending rows it inherits are read before they go,
# the timeline having changed (src/settle.c, check_takeover).  Its worker
# starts only once recovery is finished.  synchronous_standby_names is set
# on the primary alone, after the backup: the promoted server has no standby,
# and its commits must not wait for one.
$node->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('chaos_standby');
$standby->init_from_backup($node, 'base', has_streaming => 1);
$standby->start;
$node->append_conf('postgresql.conf', "synchronous_standby_names = '*'");
# a restart, not a reload: every process waits for the standby from the
# first round on
$node->restart;
$node->poll_query_until('postgres', "SELECT sync_state = 'sync' FROM pg_stat_replication")
  or die 'the standby did not become synchronous';
my $client_log = "$PostgreSQL::Test::Utils::log_path/030_chaos_clients.log";

sub query { return $node->safe_psql('postgres', $_[0]); }

# ---- the worker's private memory ----
# The worker that serves the calm last third of the run (no restart there,
# see BgChaos::schedule) is measured from halfway through that third, when
# it has made its caches and plans, to the end.  Each reading waits until
# the worker is idle with its free heap given back (src/worker_memory.c:
# busy, it keeps up to 8 MB of freed heap, which says nothing about what
# it holds), so that the growth is what it really keeps.  Its memory
# contexts go to the server log at both readings, to tell palloc'd growth
# from malloc's.
my %mem;    # calm => [ pid, kB ], last => [ pid, kB ]
my $idle = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'billogram worker' "
  . "AND query = 'billogram: idle, free memory given back'";

sub worker_private_kb
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/smaps_rollup" or return undef;
	my $kb = 0;
	while (<$fh>) { $kb += $1 if /^Private_(?:Clean|Dirty):\s+(\d+) kB/; }
	close $fh;
	return $kb;
}

sub sample_memory
{
	my ($when) = @_;
	my $p = BgTest::worker_pid($node);
	local $PostgreSQL::Test::Utils::timeout_default = 900;
	for (1 .. 3)
	{
		$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM ($idle AND pid = $p) i")
		  or return diag("the worker (pid $p) was not seen idle");
		my $kb = worker_private_kb($p);
		my $out = '';
		$node->psql('postgres', $idle, stdout => \$out);
		# still idle after the reading: it is of the idle worker
		next unless defined $kb && $out eq $p;
		$node->psql('postgres', "SELECT pg_log_backend_memory_contexts($p)");
		return $mem{$when} = [ $p, $kb ];
	}
	diag("the worker (pid $p) was not idle long enough to be read");
}

# ---- the disruptions ----

# The crashed primary must never come back: beside the promoted standby it
# would be a second primary with the same identity, sending its own queue
# again (README: copies).  Its data directory is moved aside, so that a
# start of it by mistake fails.
sub fence
{
	my ($old) = @_;
	rename($old->data_dir, $old->data_dir . '.fenced')
	  or die "fencing " . $old->data_dir . ": $!";
}

sub disrupt
{
	my ($round) = @_;
	my $what = $round->{disrupt};
	if ($what eq 'kill_worker')
	{
		# a crash: the postmaster ends every session and restarts; the
		# driver goes on once it is back (a psql in between may die of the
		# server refusing it: BgTest::worker_pid; seed 260640032)
		my $old = BgTest::worker_pid($node);
		kill 'KILL', $old;
		BgTest::worker_pid($node, $old);
	}
	elsif ($what eq 'term_worker')
	{
		$node->psql('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
			  . "WHERE backend_type = 'billogram worker'");
	}
	elsif ($what eq 'immediate_restart')
	{
		$node->stop('immediate');
		$node->start;
	}
	elsif ($what eq 'promote')
	{
		# a failover: the primary crashes mid-round, its sessions fail,
		# and from now on the promoted standby is production ($node) for
		# everything: later rounds, disruptions, the copy, the operator,
		# the books
		$node->stop('immediate');
		fence($node);
		$standby->promote;
		$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
		  or die 'the standby was not promoted';
		BgTest::worker_pid($standby);
		($node, $standby) = ($standby, undef);
	}
	elsif ($what eq 'reload')
	{
		my $s = $round->{settings};
		$node->psql('postgres', join('', map { "ALTER SYSTEM SET $_ = '$s->{$_}';\n" } sort keys %$s)
			  . "SELECT pg_reload_conf();");
	}
}

# A signed callback for the last event of an invoice, delivered as the
# endpoint would; undef if the invoice has no event yet.
sub make_callback
{
	my ($id) = @_;
	return eval { $mock->signed_callback($id, $sign_key) };
}

sub deliver_callback
{
	my ($cb) = @_;
	my $q = sub { my $v = shift; $v =~ s/'/''/g; "'$v'" };
	$node->psql('postgres', "SELECT billogram_record_callback("
		  . join(', ', map { $q->($cb->{$_}) } qw(timestamp signature body)) . ")");
}

# ---- a copy: pg_dump during a round, restored into a second cluster ----
# whose worker reaches the same API, while production goes on.  Its rows
# must be held, or in_doubt as inherited, and nothing of it sent: a payment
# it sent would show at the mock without a done row in production.
my ($copy, %copy_before, $copy_made, $copy_sends_before);

# Every attempt and verdict the copy's journal records: a row's attempts,
# when it was last sent, whether it is done, and its verdict as weighed
# where it was made (an inherited row's original evidence), one line each.
sub copy_sends
{
	return $copy->safe_psql('postgres',
		"SELECT string_agg(id || ' ' || attempts || ' ' || coalesce(sent_at::text, '-') || ' ' || (state = 'done') "
		  . "|| ' ' || coalesce(CASE evidence ->> 'verdict' WHEN 'inherited' THEN evidence -> 'original' "
		  . "ELSE evidence END ->> 'verdict', '-'), E'\\n' ORDER BY id) "
		  . "FROM billogram_requests");
}

sub make_copy
{
	BgTest::worker_pid($node);
	my $dump = "$dir/mid-run.dump";
	$copy_made = PostgreSQL::Test::Utils::run_log(
		[ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ]);
	$copy = PostgreSQL::Test::Cluster->new('copy');
	$copy->init;
	$copy->append_conf('postgresql.conf', $mock->config);
	$copy->start;
	BgTest::worker_pid($copy);
	$copy_made &&= PostgreSQL::Test::Utils::run_log(
		[ 'pg_restore', '-d', $copy->connstr('postgres'), $dump ]);
	$copy_sends_before = copy_sends();
	%copy_before = map { split / / } split /\n/, $copy->safe_psql('postgres',
		"SELECT state || ' ' || count(*) FROM billogram_requests GROUP BY state");
}

# ---- the rounds ----
my @late;    # [ round, callback ]: delivered again, late
my $n = 0;
for my $round (@{ $plan->{rounds} })
{
	$n++;
	sample_memory('calm') if $n == $plan->{memory_round};
	$mock->fault($round->{fault} eq 'down' ? '{"mode":"down"}' : BgChaos::fault_json($round));
	$mock->_ctl('POST', '/clock', encode_json({ offset_s => 0 + ($round->{clock} // 0),
		  ($round->{naive} && defined $round->{clock} ? (naive => JSON::PP::true) : ()) }));
	if (defined $round->{elsewhere})
	{
		eval { $mock->pay_elsewhere($round->{elsewhere}, $round->{elsewhere_amount}) };
	}
	my @clients;
	for my $i (0 .. $#{ $round->{sql} })
	{
		my $file = "$dir/round$n-session$i.sql";
		PostgreSQL::Test::Utils::append_to_file($file, $round->{sql}[$i]);
		push @clients, IPC::Run::start(
			[ 'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=0', '-d', $node->connstr('postgres'), '-f', $file ],
			'<', \undef, '>>', $client_log, '2>>', $client_log,
			IPC::Run::timeout(600));
	}
	sleep $round->{disrupt_after};
	$mock->fault('{"mode":"none"}') if $round->{fault} eq 'down';
	disrupt($round);
	make_copy() if $n == $plan->{dump_round};
	for my $cb (map { make_callback($_) } @{ $round->{callbacks} })
	{
		next unless $cb;
		deliver_callback($cb);
		push @late, [ $n + 2, $cb ];
	}
	deliver_callback($_->[1]) for grep { $_->[0] == $n } @late;
	eval { $_->finish } for @clients;
	$mock->fault('{"mode":"none"}');
	BgTest::worker_pid($node);
}
$mock->_ctl('POST', '/clock', '{"offset_s":0}');
deliver_callback($_->[1]) for grep { $_->[0] > $n } @late;
my $ran = time - $started;

# ---- the operator ----
# Waits until nothing is pending, sending or being checked, then acts on
# each in_doubt row as billogram_in_doubt advises and on each held row as
# the README's copies section says, checking the invoice at "Billogram":
# not_applied is resent (twice at most, then given up: mark_failed), any
# other verdict is marked done or failed after what the mock applied.
my (@verdicts, %resends, %acted);

sub mock_applied_of
{
	my ($id) = @_;
	return BgChaos::mock_applied($mock->invoice($id), $mock->requests($id));
}

my $operator_deadline = time + 900;
while (time < $operator_deadline)
{
	local $PostgreSQL::Test::Utils::timeout_default = 900;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM billogram_requests WHERE state IN ('pending', 'sending') "
		  . "OR (state = 'in_doubt' AND settle_at IS NOT NULL)")
	  or last;
	my $todo = decode_json(query(
		"SELECT coalesce(json_agg(x ORDER BY id), '[]') FROM ("
		  . "SELECT r.id, r.billogram_id, r.mode, r.amount, r.state, d.verdict, d.advice "
		  . "FROM billogram_requests r LEFT JOIN billogram_in_doubt d USING (id) "
		  . "WHERE r.state IN ('in_doubt', 'held')) x"));
	last unless @$todo;
	for my $r (@$todo)
	{
		my $at = BgChaos::applied_at_mock($r, mock_applied_of($r->{billogram_id}));
		$acted{"$r->{state} " . ($r->{verdict} // 'held')}++;
		if ($r->{state} eq 'held')
		{
			query("SELECT billogram_" . ($at ? 'fail' : 'release') . "_held($r->{id})");
			next;
		}
		push @verdicts, { %$r, applied => $at };
		if ($r->{verdict} eq 'not_applied' && !$at && ($resends{ $r->{id} } // 0) < 2)
		{
			$resends{ $r->{id} }++;
			query("SELECT billogram_resolve($r->{id}, 'resend')");
		}
		else
		{
			query("SELECT billogram_resolve($r->{id}, '" . ($at ? 'mark_done' : 'mark_failed') . "')");
		}
	}
}
sample_memory('last');

# The copy's operator: production still runs, so every held row is failed
# (releasing one would pay it a second time); its inherited in_doubt rows
# are production's, and the copy is thrown away.
$copy->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM billogram_requests WHERE state IN ('pending', 'sending')");
my %copy_after = map { split / / } split /\n/, $copy->safe_psql('postgres',
	"SELECT state || ' ' || count(*) FROM billogram_requests GROUP BY state");
$copy->safe_psql('postgres', 'SELECT billogram_fail_held()');

# ---- the books ----
my $rows = decode_json(query(
	"SELECT coalesce(json_agg(json_build_object('id', id, 'origin', origin, 'billogram_id', billogram_id, "
	  . "'mode', mode, 'amount', amount, 'state', state, 'verdict', evidence->>'verdict', "
	  . "'event_uuids', event_uuids, 'key', idempotency_key, 'http_status', http_status, "
	  . "'kind', error->>'kind', 'resolution', resolution) ORDER BY id), '[]') FROM billogram_requests"));
my %rows_of;
push @{ $rows_of{ $_->{billogram_id} } }, $_ for @$rows;
my %requests_of;
push @{ $requests_of{ $_->{id} // '' } }, $_ for @{ $mock->requests };
my %ids = map { $_->{id} => 1 } @{ $plan->{invoices} };
$ids{$_} = 1 for keys %rows_of;
$ids{$_} = 1 for grep { $_ ne '' } keys %requests_of;

my (%failures, %books);
for my $id (sort keys %ids)
{
	my $inv = eval { $mock->invoice($id) } // { payments => [], events => [] };
	my $applied = BgChaos::mock_applied($inv, $requests_of{$id} // []);
	$books{$id} = [ $applied, $inv ];
	for my $p (BgChaos::books($rows_of{$id} // [], $applied))
	{
		my $which = $p =~ /^applied by the mock/ ? 'lost' : $p =~ /^row / ? 'events' : 'extra';
		push @{ $failures{$which}{$id} }, $p;
	}
}
# every verdict the worker or the operator saw against the mock's record:
# not_applied must not have been applied, applied (a row reconciled done)
# must have been
for my $v (@verdicts)
{
	push @{ $failures{verdict}{ $v->{billogram_id} } },
	  "row $v->{id}: verdict not_applied, but the mock applied it"
	  if $v->{verdict} eq 'not_applied' && $v->{applied};
}
for my $r (grep { ($_->{verdict} // '') eq 'applied' } @$rows)
{
	push @{ $failures{verdict}{ $r->{billogram_id} } },
	  "row $r->{id}: verdict applied, but the mock did not apply it"
	  unless BgChaos::applied_at_mock($r, $books{ $r->{billogram_id} }[0]);
}

# What a failure shows: the seed, the invoice, its journal rows and the
# mock's record of it.
sub show_failures
{
	my ($which) = @_;
	my $f = $failures{$which} // {};
	my @ids = sort keys %$f;
	for my $id (@ids[ 0 .. ($#ids < 9 ? $#ids : 9) ])
	{
		my ($applied, $inv) = @{ $books{$id} // [ [], {} ] };
		diag("seed $seed, invoice $id: " . join('; ', @{ $f->{$id} }));
		diag("  journal: " . encode_json($_)) for @{ $rows_of{$id} // [] };
		diag("  mock applied: " . join(', ', map { "$_->{key} (seq $_->{seq}, event $_->{uuid})" } @$applied));
		diag("  mock remaining_sum $inv->{remaining_sum}, payments "
			  . encode_json($inv->{payments} // []));
		diag("  mock requests: " . join(', ', map {
			  "seq $_->{seq} $_->{method}" . ($_->{method} eq 'POST' ? " $_->{body}" : '')
				. ($_->{fault} ? " fault $_->{fault}" : '') } @{ $requests_of{$id} // [] }));
	}
	diag(scalar(@ids) . " invoices in all") if @ids > 10;
	return scalar @ids;
}

my $invoices = keys %ids;
my ($pass, $fail) = (0, 0);

sub invariant
{
	my ($ok, $name) = @_;
	ok($ok, $name) ? $pass++ : $fail++;
	diag("seed $seed: FAILED: $name") unless $ok;
}

invariant(!show_failures('lost'), "every payment the mock applied has a done row ($invoices invoices)");
invariant(!show_failures('extra'), 'every done row is a payment the mock applied, in count and amount');
invariant(!show_failures('events'), "every done row's events include the mock's payment of it");
invariant(!show_failures('verdict'), 'every verdict agrees with the mock (' . scalar(@verdicts)
	  . ' in_doubt rows acted on, ' . scalar(grep { ($_->{verdict} // '') eq 'applied' } @$rows)
	  . ' reconciled)');
my $left = query("SELECT count(*) FROM billogram_requests WHERE state IN ('pending', 'sending')");
invariant($left == 0, "nothing pending or sending ($left)");
$left = query("SELECT string_agg(id || ' ' || state, ', ') FROM billogram_requests "
	  . "WHERE state IN ('in_doubt', 'held')");
invariant($left eq '', "nothing in_doubt or held once the operator acted ($left)");
# Sent and weighed nothing: no row's attempts, time sent, done or not, or
# verdict changed, none is left pending or sending.  An in_doubt row the
# original was still checking is inherited in the copy, unread: its
# verdict stays the original's, kept under 'original'.
my $copy_sends_after = copy_sends();
invariant($copy_made && !$copy_after{pending} && !$copy_after{sending}
	  && $copy_sends_after eq $copy_sends_before,
	"the copy restored in round $plan->{dump_round} sent and weighed nothing (before: "
	  . join(', ', map { "$_ $copy_before{$_}" } sort keys %copy_before) . '; after: '
	  . join(', ', map { "$_ $copy_after{$_}" } sort keys %copy_after) . ')');
my ($calm_pid, $calm_kb) = @{ $mem{calm} // [ 0, 0 ] };
my ($last_pid, $last_kb) = @{ $mem{last} // [ -1, 0 ] };
invariant($calm_pid == $last_pid && $last_kb - $calm_kb < 10 * 1024,
	sprintf('the worker\'s private memory grew by less than 10 MB over the last sixth of the run '
		  . '(%d kB, from %d kB to %d kB; pid %d then, %d at the end; its memory contexts at both are in the server log)',
		$last_kb - $calm_kb, $calm_kb, $last_kb, $calm_pid, $last_pid));

my %states = map { split / / } split /\n/,
  query("SELECT state || ' ' || count(*) FROM billogram_requests GROUP BY state");
diag("seed $seed: " . scalar(@{ $plan->{rounds} }) . " rounds, $payments payments, "
	  . scalar(@{ $plan->{invoices} }) . " invoices, ran " . int($ran) . " s, in all "
	  . int(time - $started) . " s");
diag("  mix: " . join(', ', map { "$_ $plan->{mix}{$_}" } sort keys %{ $plan->{mix} }));
diag("  journal: " . join(', ', map { "$_ $states{$_}" } sort keys %states));
diag("  operator: " . join(', ', map { "$_ $acted{$_}" } sort keys %acted)
	  . ", resends " . scalar(keys %resends));
diag("$pass passed, $fail failed");

$copy->stop;
$standby->stop if $standby;    # a run too short to promote it
$node->stop;
$mock->stop;
done_testing();
