# BgTest: helpers for billogram's TAP tests.
#
# start_mock() runs the bundled mock Billogram API (tests/mock) over HTTPS
# with freshly generated certificates; new_node() makes a real PostgreSQL
# cluster with the extension preloaded and pointed at that mock.
package BgTest;

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

our $TOP = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
our $USER = 'demo-user';
our $PASSWORD = 'demo-secret-8f3a';

sub start_mock
{
	my ($class, %opts) = @_;
	my $dir = $opts{dir} // PostgreSQL::Test::Utils::tempdir('mock');
	my $certs = $opts{certs};
	if (!$certs)
	{
		$certs = "$dir/certs";
		system('bash', "$TOP/tests/mock/gen-cert.sh", $certs) == 0
		  or die "gen-cert.sh failed";
	}
	unlink "$dir/port", "$dir/ctl-port";
	my @cmd = (
		'/usr/bin/python3', "$TOP/tests/mock/billogram_mock.py",
		'--cert', "$certs/server.crt", '--key', "$certs/server.key",
		'--user', $USER, '--password', $PASSWORD,
		'--port-file', "$dir/port", '--ctl-port-file', "$dir/ctl-port",
		'--log', "$dir/mock.log",
		($opts{port} ? ('--port', $opts{port}) : ()));
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>>', "$dir/mock.out",
		'2>>', "$dir/mock.out");
	for (1 .. 200)
	{
		last if -s "$dir/port" && -s "$dir/ctl-port";
		usleep(50_000);
	}
	my $self = bless {
		dir => $dir,
		certs => $certs,
		handle => $h,
		port => slurp_file("$dir/port") + 0,
		ctl => 'http://127.0.0.1:' . (slurp_file("$dir/ctl-port") + 0),
		http => HTTP::Tiny->new(timeout => 30),
	}, $class;
	return $self;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{handle};
	$self->{handle}->signal('TERM');
	$self->{handle}->finish;
	delete $self->{handle};
}

sub DESTROY { my ($self) = @_; $self->stop if $self->{handle}; }

sub url { my ($self) = @_; return "https://localhost:$self->{port}/api/v2"; }

sub _ctl
{
	my ($self, $method, $path, $body) = @_;
	my $r = $self->{http}->request($method, $self->{ctl} . $path,
		defined $body ? { content => $body } : {});
	die "mock control $method $path: $r->{status} $r->{content}"
	  unless $r->{success};
	return $r->{content};
}

# Every request the mock received (for one invoice id, or all).
sub requests
{
	my ($self, $id) = @_;
	my $path = '/requests' . (defined $id ? "?id=$id" : '');
	return decode_json($self->_ctl('GET', $path));
}

# Only the credit payments (POSTs), not the worker's GETs of invoices.
sub posts
{
	my ($self, $id) = @_;
	return [ grep { $_->{method} eq 'POST' } @{ $self->requests($id) } ];
}

# The mock's state of one invoice: remaining_sum and the payments applied.
sub invoice
{
	my ($self, $id) = @_;
	return decode_json($self->_ctl('GET', "/invoice/$id"));
}

# POSTs per invoice id, for ids matching a pattern.
sub post_counts
{
	my ($self, $pattern) = @_;
	my %n;
	$n{ $_->{id} }++ for grep { $_->{id} =~ $pattern } @{ $self->posts };
	return \%n;
}

# A payment made on an invoice outside the API (by "someone else").
sub pay_elsewhere
{
	my ($self, $id, $amount) = @_;
	return decode_json($self->_ctl('POST', "/invoice/$id/pay",
			encode_json({ amount => "$amount" })));
}

# A callback Billogram would send for an event of an invoice, signed with
# key: { timestamp, signature, body }.  %o: event (index), encoding, timestamp.
sub signed_callback
{
	my ($self, $id, $key, %o) = @_;
	return decode_json($self->_ctl('POST', '/callback',
			encode_json({ id => $id, key => $key, %o })));
}

sub fault { my ($self, $json) = @_; $self->_ctl('POST', '/fault', $json); }
sub reset { my ($self) = @_; $self->_ctl('POST', '/reset', ''); }

# A new file holding secret on its line, with mode (0600 unless given), as
# the extension reads its password and sign key (src/credentials.c); its path.
my $secret_files = 0;

sub secret_file
{
	my ($self, $secret, $mode) = @_;
	my $path = "$self->{dir}/secret" . $secret_files++;
	open my $fh, '>', $path or die "$path: $!";
	print $fh "$secret\n";
	close $fh;
	chmod($mode // 0600, $path) or die "chmod $path: $!";
	return $path;
}

# postgresql.conf lines pointing the extension at this mock, with the
# password (password => '' for none) in a file.
sub config
{
	my ($self, %o) = @_;
	my $password = $o{password} // $PASSWORD;
	my $ca = $o{ca_file} // "$self->{certs}/ca.crt";
	my $password_file = $password eq '' ? ''
	  : "billogram.api_password_file = '" . $self->secret_file($password) . "'";
	return <<"CONF";
shared_preload_libraries = 'billogram'
billogram.api_url = '@{[ $o{url} // $self->url ]}'
billogram.api_user = '$USER'
$password_file
billogram.ca_file = '$ca'
log_min_messages = @{[ $o{log_min_messages} // 'info' ]}
restart_after_crash = on
# the extension's objects are in schema billogram: the tests name them
# unqualified, as a role whose search_path holds it does (after public,
# where what the tests make goes; not the role's own schema: the superuser
# the tests run as is called billogram)
search_path = 'public, billogram'
CONF
}

# A started cluster with the extension created in database postgres;
# allows_streaming => 1 makes it a primary a standby can be made from.
sub new_node
{
	my ($self, $name, %o) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $o{allows_streaming} // 0);
	$node->append_conf('postgresql.conf', $self->config(%o));
	$node->append_conf('postgresql.conf', $o{extra}) if $o{extra};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION billogram');
	return $node;
}

# The worker's pid, waiting until it is up; with $not, until a worker
# other than that one is up (after a crash, the restarted one).
sub worker_pid
{
	my ($node, $not) = @_;
	my $cond = "backend_type = 'billogram worker'" . (defined $not ? " AND pid <> $not" : '');
	# A server restarting after a crash refuses connections for a moment,
	# and psql, refused, may exit before IPC::Run has written the query to
	# its stdin: the write fails with EPIPE, which dies.  That is the server
	# coming back, not an answer: ask again.
	my $up;
	for my $try (1 .. 20)
	{
		$up = eval { $node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity WHERE $cond") };
		last if defined $up || $@ !~ /Broken pipe/;
	}
	die $@ unless defined $up;
	$up or die "billogram worker did not start";
	return $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE $cond");
}

# Wait until no journal row is pending or sending.
sub wait_settled
{
	my ($node, $timeout) = @_;
	local $PostgreSQL::Test::Utils::timeout_default = $timeout // 120;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM billogram_requests WHERE state IN ('pending', 'sending')");
}

# Start psql -c $sql in the background: { h => harness, out, err }; call
# ->{h}->finish before reading out and err.
sub start_psql
{
	my ($node, $sql) = @_;
	my %r = (out => '', err => '');
	$r{h} = IPC::Run::start(
		[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$r{out}, '2>', \$r{err});
	return \%r;
}

# Run one call; returns (sqlstate or '', stdout, stderr).
sub call
{
	my ($node, $sql) = @_;
	my ($stdout, $stderr) = ('', '');
	$node->psql('postgres',
		"\\set VERBOSITY verbose\n$sql",
		stdout => \$stdout, stderr => \$stderr, on_error_stop => 1);
	my ($state) = $stderr =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return ($state // '', $stdout, $stderr);
}

1;
