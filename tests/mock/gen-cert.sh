#!/bin/sh
# gen-cert.sh DIR [SUBJECT_ALT_NAME]
#
# Makes a throw-away test CA (DIR/ca.crt, DIR/ca.key) and a server
# certificate signed by it (DIR/server.crt, DIR/server.key) for
# SUBJECT_ALT_NAME, by default "DNS:localhost, IP:127.0.0.1" (another name
# makes a certificate the client must refuse for localhost), EC P-256,
# valid 30 days.  Overwrites whatever is there.  Prints nothing unless
# something fails.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 DIR [SUBJECT_ALT_NAME]" >&2
	exit 2
fi
dir=$1
san=${2:-DNS:localhost, IP:127.0.0.1}
mkdir -p "$dir"

work=$(mktemp -d "$dir/.gen-cert.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no

[dn]
CN = placeholder

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

run() {
	if ! "$@" >"$work/out" 2>&1; then
		cat "$work/out" >&2
		echo "gen-cert.sh: failed: $*" >&2
		exit 1
	fi
}

serial() {
	echo "0x$(openssl rand -hex 12)"
}

run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	-out "$work/ca.key"
run openssl req -config "$work/openssl.cnf" -new -x509 -sha256 \
	-key "$work/ca.key" -subj "/CN=billogram-mock throw-away test CA" \
	-extensions ca_ext -set_serial "$(serial)" -days 30 -out "$work/ca.crt"

run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	-out "$work/server.key"
run openssl req -config "$work/openssl.cnf" -new -sha256 \
	-key "$work/server.key" -subj "/CN=localhost" -out "$work/server.csr"
run openssl x509 -req -sha256 -in "$work/server.csr" \
	-CA "$work/ca.crt" -CAkey "$work/ca.key" -set_serial "$(serial)" \
	-days 30 -extfile "$work/openssl.cnf" -extensions server_ext \
	-out "$work/server.crt"
run openssl verify -CAfile "$work/ca.crt" "$work/server.crt"

for f in ca.key ca.crt server.key server.crt; do
	mv -f "$work/$f" "$dir/$f"
done
