#!/bin/sh
# Regenerates doveadm-vectors.txt with Dovecot's own `doveadm pw`.
# Usage: sh testdata/passwd/gen-vectors.sh > testdata/passwd/doveadm-vectors.txt
# Every line written is checked again with `doveadm pw -t` before it is kept.
set -eu

dove() { doveadm -c /dev/null pw "$@"; }

long=$(printf 'x%.0s' $(seq 1 80))   # 80 bytes: over bcrypt's 72-byte limit
unicode='pässwörd ünïcode'
symbols='sp ace $dollar {brace} "quote"'

# emit SCHEME PASSWORD STORED: print one vector after checking it with doveadm.
emit() {
	dove -t "$3" -p "$2" >/dev/null 2>&1 || { echo "doveadm rejects its own $1 vector" >&2; exit 1; }
	printf '%s\t%s\t%s\n' "$1" "$2" "$3"
}

# gen SCHEME [doveadm options...] -- PASSWORD...
gen() {
	scheme=$1; shift
	opts=""
	while [ "$1" != "--" ]; do opts="$opts $1"; shift; done
	shift
	for pw in "$@"; do
		# shellcheck disable=SC2086
		emit "$scheme" "$pw" "$(dove -s "$scheme" $opts -p "$pw")"
	done
}

# bare SCHEME PASSWORD: a crypt string without its {SCHEME} prefix, as PostfixAdmin stores it.
bare() {
	h=$(dove -s "$1" -p "$2")
	h=${h#*\}}
	dove -t "{CRYPT}$h" -p "$2" >/dev/null 2>&1 || { echo "doveadm rejects bare $1" >&2; exit 1; }
	printf '%s\t%s\t%s\n' "(none)" "$2" "$h"
}

cat <<HDR
# Password hashes written by Dovecot's doveadm, for lookups/passwd's tests.
# Made by testdata/passwd/gen-vectors.sh with Dovecot $(dovecot --version):
#   doveadm pw -s SCHEME [-r ROUNDS] -p PASSWORD
# and each line checked with: doveadm pw -t STORED -p PASSWORD
# Lines with scheme "(none)" are crypt strings with the {SCHEME} prefix removed (PostfixAdmin's
# bare form, verified through the default scheme CRYPT); the \$2a\$ and \$2b\$ lines are a \$2y\$ hash
# with its prefix changed (bcrypt computes them alike), also checked with doveadm pw -t.
# Format: SCHEME<TAB>PASSWORD<TAB>STORED; passwords contain no tabs.
HDR

gen ARGON2ID -- secret "$unicode"
gen ARGON2I -- secret
gen ARGON2ID.B64 -- secret
gen BLF-CRYPT -- secret
gen BLF-CRYPT -r 4 -- "$unicode" "$symbols" "$long"
gen BLF-CRYPT.B64 -r 4 -- secret
gen SHA512-CRYPT -- secret "$unicode" "$symbols" "$long"
gen SHA512-CRYPT -r 10000 -- secret
gen SHA512-CRYPT.B64 -- secret "$unicode"
gen SHA256-CRYPT -- secret "$unicode"
gen SHA256-CRYPT -r 12345 -- secret
gen MD5-CRYPT -- secret "$unicode" "$symbols"
gen MD5-CRYPT.B64 -- secret
gen MD5 -- secret "$unicode"
gen CRYPT -- secret
for s in SSHA512 SSHA256 SSHA SMD5 SHA512 SHA256 SHA1 SHA PLAIN-MD5 LDAP-MD5 PLAIN CLEARTEXT CLEAR; do
	gen "$s" -- secret "$unicode" "$symbols"
done
for s in SSHA512.HEX SSHA512.B64 SSHA256.BASE64 SSHA.HEX SHA512.HEX SHA256.HEX SHA1.HEX SHA.B64 \
	PLAIN-MD5.B64 PLAIN-MD5.HEX PLAIN-MD5.BASE64 LDAP-MD5.HEX PLAIN.B64 PLAIN.HEX; do
	gen "$s" -- secret "$unicode"
done

# Bare crypt strings (no prefix), read through the default scheme.
for s in SHA512-CRYPT SHA256-CRYPT MD5-CRYPT BLF-CRYPT; do
	bare "$s" secret
done
bare SHA512-CRYPT "$unicode"

# $2a$ and $2b$: Dovecot writes $2y$ only.
for v in 2a 2b; do
	h=$(dove -s BLF-CRYPT -r 4 -p secret)
	h=${h#*\}}
	h="\$$v\$${h#\$2y\$}"
	emit BLF-CRYPT secret "{BLF-CRYPT}$h"
	dove -t "{CRYPT}$h" -p secret >/dev/null 2>&1 || { echo "doveadm rejects bare \$$v\$" >&2; exit 1; }
	printf '%s\t%s\t%s\n' "(none)" secret "$h"
done
