#!/bin/sh
# Regenerates the DKIM test messages of this directory with independent
# signers: OpenDKIM (the opendkim filter in its test mode, and
# opendkim-testmsg, both libopendkim) and python3-dkim (dkimsign, dkimpy).
# Run it from this directory; it needs the Debian packages opendkim,
# opendkim-tools and python3-dkim. The keys are test keys made for
# this purpose only; records.txt holds the DNS records the tests publish.
set -eu
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Keys: RSA 2048 from opendkim-genkey, Ed25519 from dknewkey.
opendkim-genkey -b 2048 -d od.example -s od2026 -D "$tmp"
cp "$tmp/od2026.private" rsa.private
(cd "$tmp" && dknewkey --ktype ed25519 ed >/dev/null)
cp "$tmp/ed.key" ed25519.private
rsa_p=$(openssl rsa -in rsa.private -pubout -outform DER 2>/dev/null | base64 -w0)
ed_p=$(sed -n 's/.*p=\([A-Za-z0-9+\/=]*\).*/\1/p' "$tmp/ed.dns")
{
	echo "od2026._domainkey.od.example v=DKIM1; k=rsa; p=$rsa_p"
	echo "py2026._domainkey.py.example v=DKIM1; k=rsa; p=$rsa_p"
	echo "ed2026._domainkey.py.example v=DKIM1; k=ed25519; p=$ed_p"
} > records.txt

msg() { # from-domain
	printf 'From: Alice <alice@%s>\r\nTo: bob@facteur.example\r\nSubject: DKIM test from %s\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%s.1@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob,\r\n\r\nthis message was signed by an independent DKIM signer.\r\n' "$1" "$1" "$1" "$1"
}

# OpenDKIM: the filter signs in test mode (-t) and prints the field it
# would insert (-vvv); rsa-sha256, relaxed/relaxed.
msg od.example > "$tmp/od.eml"
cat > "$tmp/sign.conf" <<CONF
Mode s
Domain od.example
Selector od2026
KeyFile $(pwd)/rsa.private
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
Syslog no
RequireSafeKeys no
CONF
opendkim -x "$tmp/sign.conf" -vvv -t "$tmp/od.eml" 2>&1 |
	sed -n "/INSHEADER: idx=0 hname='DKIM-Signature'/,/'\$/p" |
	sed -e "s/^### INSHEADER: idx=0 hname='DKIM-Signature' hvalue='/DKIM-Signature: /" -e "s/'\$//" -e 's/$/\r/' > opendkim-rsa.eml
grep -q '^DKIM-Signature: v=1; a=rsa-sha256' opendkim-rsa.eml
cat "$tmp/od.eml" >> opendkim-rsa.eml
# opendkim-testmsg signs with rsa-sha1, which verifiers must refuse
# (RFC 8301 3.1): a permerror case.
opendkim-testmsg -C -d od.example -s od2026 -k rsa.private < "$tmp/od.eml" > opendkim-testmsg-sha1.eml
# python3-dkim: RSA relaxed/simple, Ed25519 relaxed/relaxed, and a message
# carrying both signatures.
msg py.example > "$tmp/py.eml"
dkimsign py2026 py.example rsa.private < "$tmp/py.eml" > dkimpy-rsa.eml
dkimsign --bcanon relaxed --signalg ed25519-sha256 ed2026 py.example ed25519.private < "$tmp/py.eml" > dkimpy-ed25519.eml
dkimsign --bcanon relaxed --signalg ed25519-sha256 ed2026 py.example ed25519.private < dkimpy-rsa.eml > dkimpy-both.eml
