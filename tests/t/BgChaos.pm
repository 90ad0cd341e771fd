# BgChaos: the schedule of a chaos run (tests/t/030_chaos.pl), made from
# one seed, and the books it is judged by.
#
# schedule() turns a seed and a number of payments into invoices (some
# with an id whose prefix makes the mock fault every request on it, see
# tests/mock/README.md), the payments on each (distinct amounts per
# invoice, so that the mock's record of one tells which journal row it
# was), and rounds: the SQL each client session runs, the mock's global
# fault, its clock, a disruption of the server (in one round, a failover
# to its standby) and callbacks to deliver.
# Everything comes from Perl's seeded rand(), so one seed is one schedule.
#
# books() compares, per invoice, the journal's done rows with the payments
# the mock applied through its API, and says what does not balance.
package BgChaos;

use strict;
use warnings;

use List::Util qw(shuffle sum0);

# Ids whose prefix faults every request on them (tests/mock/README.md).
# Left out: e429 and e503 (every attempt refused: a queued row would be
# retried until billogram.retry_for; the global status faults below give
# 429 and 503 with and without Retry-After for a while instead).
our @MAGIC = qw(a500 n500 a502 e502 e504 adrop ndrop cut trunc notjson
  empty nodata okerr created slow1500x trickle silent);

# The global faults of a round, with their weights.
our @FAULTS = (
	[ none => 8 ],
	[ s500 => 1 ],
	[ s503ra => 1 ],
	[ s503 => 1 ],
	[ s429ra => 1 ],
	[ s429 => 1 ],
	[ random => 2 ],
	[ slow => 1 ],
	[ down => 1 ],);

# What a payment is made by, with weights.
our @KINDS = (
	[ sync => 5 ],
	[ sync_key_retry => 2 ],
	[ enqueue => 3 ],
	[ enqueue_key => 1 ],
	[ trigger_single => 3 ],
	[ trigger_multi => 3 ],
	[ copy => 2 ],
	[ rolled_back => 1 ],);

# Disruptions of the server during a round, with weights.  promote (the
# primary crashes and its synchronous standby takes over) has none: a run
# has one standby, so it is never picked by chance, only placed once below.
our @DISRUPT = (
	[ none => 14 ],
	[ promote => 0 ],
	[ kill_worker => 2 ],
	[ term_worker => 1 ],
	[ immediate_restart => 2 ],
	[ reload => 3 ],);

sub pick
{
	my ($table) = @_;
	my $r = rand(sum0(map { $_->[1] } @$table));
	for (@$table)
	{
		return $_->[0] if ($r -= $_->[1]) < 0;
	}
	return $table->[-1][0];
}

# The schedule: { invoices => [...], rounds => [...], mix => {...} }.
sub schedule
{
	my (%o) = @_;
	srand($o{seed});
	my $sessions = $o{sessions} // 6;
	my (@invoices, @payments, %mix);
	my $made = 0;
	while ($made < $o{payments})
	{
		my $n = 1 + int(rand(4));
		$n = $o{payments} - $made if $made + $n > $o{payments};
		my $prefix = rand() < 0.2 ? $MAGIC[ int(rand(@MAGIC)) ] : 'pay';
		my $inv = { id => $prefix . 'c' . scalar(@invoices), payments => [] };
		$mix{"invoice $prefix"}++ if $prefix ne 'pay';
		for my $j (0 .. $n - 1)
		{
			# amounts distinct per invoice (100 j + 1 to 100 j + 99.99),
			# together at most 399.99 of the invoice's 1000.00; the last
			# one sometimes pays whatever remains
			my $p = {
				invoice => $inv->{id},
				kind => pick(\@KINDS),
				mode => ($j == $n - 1 && rand() < 0.1) ? 'remaining' : 'amount',
			};
			$p->{amount} = sprintf('%d.%02d', 100 * $j + 1 + int(rand(99)), int(rand(100)))
			  if $p->{mode} eq 'amount';
			$p->{key} = "k$o{seed}x$inv->{id}x$j" if $p->{kind} =~ /key/;
			$mix{"op $p->{kind}"}++;
			$mix{'op remaining'}++ if $p->{mode} eq 'remaining';
			push @{ $inv->{payments} }, $p;
			push @payments, $p;
		}
		$made += $n;
		push @invoices, $inv;
	}
	# rounds of 30 to 90 payments in a random order, so that one invoice's
	# payments meet different faults, some in one session, some in another
	my @order = shuffle(@payments);
	my @rounds;
	while (@order)
	{
		my @these = splice(@order, 0, 30 + int(rand(61)));
		my @by_session = map { [] } 1 .. $sessions;
		push @{ $by_session[ int(rand($sessions)) ] }, $_ for @these;
		my @sql = map { session_sql($_) } @by_session;
		# sometimes a session moves some earlier trigger rows to the other
		# partition: an UPDATE that deletes and inserts, and must queue nothing
		if (rand() < 0.3)
		{
			$sql[ int(rand($sessions)) ] .= "UPDATE payouts SET region = CASE region WHEN 'a' THEN 'b' ELSE 'a' END "
			  . "WHERE id % 10 = " . int(rand(10)) . ";\n";
			$mix{'op partition move'}++;
		}
		my $round = {
			sql => \@sql,
			fault => pick(\@FAULTS),
			disrupt => pick(\@DISRUPT),
			disrupt_after => rand(2),
			clock => rand() < 0.15 ? (qw(-120 -30 45 300))[ int(rand(4)) ] : undef,
			naive => rand() < 0.5 ? 1 : 0,
			fault_seed => int(rand(1_000_000)),
			slow_ms => 100 + int(rand(600)),
			count => 1 + int(rand(12)),
			callbacks => rand() < 0.3 ? [ map { $invoices[ int(rand(@invoices)) ]{id} } 1 .. 3 ] : [],
			elsewhere => rand() < 0.1 ? $invoices[ int(rand(@invoices)) ]{id} : undef,
			elsewhere_amount => sprintf('0.%02d', 1 + int(rand(99))),
			settings => {
				'billogram.max_connections' => (2, 4, 8)[ int(rand(3)) ],
				'billogram.journal_reply' => (qw(summary full none))[ int(rand(3)) ],
				# above the mock's longest hold (3 s), see 030_chaos.pl
				'billogram.settle_time' => (qw(4s 5s 8s))[ int(rand(3)) ],
			},
		};
		push @rounds, $round;
	}
	# The last third of the run restarts no worker (a promotion starts
	# another), so that the last worker serves a third of the payments at
	# least: the memory it grew by over them is what the run measures.
	my $calm = @rounds >= 3 ? int(@rounds * 2 / 3) : scalar @rounds;
	$_->{disrupt} = 'reload' for grep { $_->{disrupt} =~ /worker|restart|promote/ } @rounds[ $calm .. $#rounds ];
	# every global fault and every disruption at least once in a run long
	# enough, each in a round of its own, the rest left to chance (promote
	# first, so that any run has its one promotion)
	for my $what ([ fault => \@FAULTS, $#rounds ], [ disrupt => \@DISRUPT, $calm - 1 ])
	{
		my @kinds = grep { $_ ne 'none' } map { $_->[0] } @{ $what->[1] };
		my @where = shuffle(0 .. $what->[2]);
		$rounds[ shift @where ]{ $what->[0] } = $_ for @kinds[ 0 .. ($#where < $#kinds ? $#where : $#kinds) ];
	}
	for my $round (@rounds)
	{
		$mix{"fault $round->{fault}"}++;
		$mix{"disrupt $round->{disrupt}"}++ if $round->{disrupt} ne 'none';
		$mix{'fault clock'}++ if defined $round->{clock};
		$mix{'fault callbacks'} += @{ $round->{callbacks} } if @{ $round->{callbacks} };
		$mix{'fault paid elsewhere'}++ if defined $round->{elsewhere};
	}
	# the round during which the database is dumped and restored into a
	# second cluster, as a staging copy made while production runs
	my $dump_round = 1 + int(rand(scalar @rounds));
	# the round before which the worker's memory is first read (1-based):
	# halfway through the calm third, so that the worker read then, which
	# serves the rest, has made its caches and plans over rounds of every
	# kind (read after its first round, their growth over the next few was
	# most of 4.6 MB in seed 11)
	my $memory_round = $calm + 1 + int((@rounds - $calm) / 2);
	$memory_round = @rounds if $memory_round > @rounds;    # a run too short for a calm third
	return { invoices => \@invoices, rounds => \@rounds, mix => \%mix, dump_round => $dump_round,
		memory_round => $memory_round };
}

sub q_lit { my $v = shift; return defined $v ? "'$v'" : 'NULL'; }

# The psql script one session runs in a round: each payment in the way its
# kind says; trigger_multi and copy take the next few payments of those
# kinds along into one INSERT or one COPY.
sub session_sql
{
	my ($payments) = @_;
	my @p = @$payments;
	my $sql = '';
	while (my $p = shift @p)
	{
		my @args = (q_lit($p->{invoice}), q_lit($p->{mode}), q_lit($p->{amount}));
		my $call = join(', ', @args, q_lit($p->{key}));
		if ($p->{kind} eq 'sync')
		{
			$sql .= "SELECT billogram_credit_payment($call) IS NOT NULL;\n";
		}
		elsif ($p->{kind} eq 'sync_key_retry')
		{
			# the call, then its retry with the same key, once or twice
			$sql .= "SELECT billogram_credit_payment($call) IS NOT NULL;\n" x (2 + int(rand(2)));
		}
		elsif ($p->{kind} =~ /^enqueue/)
		{
			$sql .= "SELECT billogram_enqueue_credit_payment($call);\n";
			$sql .= "SELECT billogram_enqueue_credit_payment($call);\n" if $p->{key};
		}
		elsif ($p->{kind} eq 'rolled_back')
		{
			# queued and rolled back: must never be paid
			$sql .= "BEGIN; SELECT billogram_enqueue_credit_payment($call); ROLLBACK;\n";
		}
		elsif ($p->{kind} eq 'trigger_single')
		{
			$sql .= "INSERT INTO payouts (invoice, amount, mode) VALUES ("
			  . join(', ', map { q_lit($p->{$_}) } qw(invoice amount mode)) . ");\n";
		}
		else
		{
			my @group = ($p);
			# up to four more of the session's payments of this kind
			for my $i (reverse 0 .. $#p)
			{
				push @group, splice(@p, $i, 1) if @group < 5 && $p[$i]{kind} eq $p->{kind};
			}
			if ($p->{kind} eq 'copy')
			{
				$sql .= "COPY payouts (invoice, amount, mode) FROM STDIN;\n";
				$sql .= join("\t", $_->{invoice}, $_->{amount} // '\N', $_->{mode}) . "\n" for @group;
				$sql .= "\\.\n";
			}
			else
			{
				$sql .= "INSERT INTO payouts (invoice, amount, mode) VALUES "
				  . join(', ', map { my $g = $_; '(' . join(', ', map { q_lit($g->{$_}) } qw(invoice amount mode)) . ')' } @group)
				  . ";\n";
			}
		}
	}
	return $sql;
}

# The mock's global fault for a round, as the JSON its control port takes.
sub fault_json
{
	my ($r) = @_;
	my $f = $r->{fault};
	return '{"mode":"none"}' if $f eq 'none' || $f eq 'down';
	return qq({"mode":"status","status":500,"count":$r->{count}}) if $f eq 's500';
	if ($f =~ /^s(503|429)(ra)?$/)
	{
		my $ra = $2 ? ',"retry_after":1' : '';
		return qq({"mode":"status","status":$1$ra,"count":$r->{count}});
	}
	return qq({"mode":"random","rate":0.1,"seed":$r->{fault_seed}}) if $f eq 'random';
	return qq({"mode":"slow","ms":$r->{slow_ms}}) if $f eq 'slow';
	die "unknown fault $f";
}

# What one payment is in the books: its amount with two decimals, or R for
# the whole remaining sum.
sub book_key
{
	my ($mode, $amount) = @_;
	return 'R' if $mode eq 'remaining';
	return sprintf('%.2f', $amount);
}

# The payments the mock applied through its API to one invoice, as book
# keys, from its invoice view and its record of requests: [ { key, seq,
# amount, uuid } ].
sub mock_applied
{
	my ($invoice, $requests) = @_;
	my %body = map { $_->{seq} => $_->{body} } @$requests;
	my @out;
	for my $i (0 .. $#{ $invoice->{payments} })
	{
		my $p = $invoice->{payments}[$i];
		next unless defined $p->{seq};
		my $b = eval { JSON::PP::decode_json($body{ $p->{seq} } // '{}') } // {};
		push @out, {
			key => book_key($b->{mode} // 'amount', $p->{amount}),
			seq => $p->{seq},
			amount => $p->{amount},
			uuid => $invoice->{events}[$i]{event_uuid},
		};
	}
	return \@out;
}

# Whether the payment of a journal row is among the mock's applied ones.
sub applied_at_mock
{
	my ($row, $applied) = @_;
	my $k = book_key($row->{mode}, $row->{amount});
	return scalar grep { $_->{key} eq $k } @$applied;
}

# The books of one invoice: the list of what does not balance (empty when
# they do).  $rows: the journal's rows of it; $applied: mock_applied().
sub books
{
	my ($rows, $applied) = @_;
	my @problems;
	my (%done, %mock);
	$done{ book_key($_->{mode}, $_->{amount}) }++ for grep { $_->{state} eq 'done' } @$rows;
	$mock{ $_->{key} }++ for @$applied;
	for my $k (sort keys %mock)
	{
		my $d = $done{$k} // 0;
		push @problems, "applied by the mock $mock{$k} time(s) but $d done row(s): $k"
		  if $mock{$k} > $d;
	}
	for my $k (sort keys %done)
	{
		my $m = $mock{$k} // 0;
		push @problems, "$done{$k} done row(s) but applied by the mock $m time(s): $k"
		  if $done{$k} > $m;
	}
	# a done row that names events (its reply's new ones, or the one a
	# settlement found) names the one the mock made for it
	my %uuid = map { $_->{uuid} => $_ } @$applied;
	for my $r (grep { $_->{state} eq 'done' && @{ $_->{event_uuids} // [] } } @$rows)
	{
		my $k = book_key($r->{mode}, $r->{amount});
		push @problems, "row $r->{id} ($k) names events @{ $r->{event_uuids} }, none of them the mock's payment of $k"
		  unless grep { $uuid{$_} && $uuid{$_}{key} eq $k } @{ $r->{event_uuids} };
	}
	return @problems;
}

1;
