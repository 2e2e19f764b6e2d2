#!/usr/bin/env python3
"""Verify messages' DKIM signatures with python3-dkim (dkimpy), an
implementation independent of facteur's, taking the public key record from
the command line instead of DNS.

usage: dkimverify.py NAME RECORD MESSAGE-FILE...
  NAME    the DNS name of the key, "<selector>._domainkey.<domain>"
  RECORD  the TXT record published there, "v=DKIM1; k=rsa; p=..."

It prints one line per file, "pass" when every signature of the message
verifies and "fail" otherwise (or when it has none), and exits 0.
"""
import sys

import dkim


def verify(path, name, record):
    with open(path, 'rb') as f:
        msg = f.read()

    def dnsfunc(qname, timeout=5):
        if isinstance(qname, bytes):
            qname = qname.decode()
        if qname.rstrip('.').lower() == name:
            return record.encode()
        return None

    try:
        d = dkim.DKIM(msg)
        n = len([k for k, _ in d.headers if k.lower() == b'dkim-signature'])
        return n > 0 and all(d.verify(idx=i, dnsfunc=dnsfunc) for i in range(n))
    except dkim.DKIMException as e:
        print(e, file=sys.stderr)
        return False


def main():
    name, record = sys.argv[1].rstrip('.').lower(), sys.argv[2]
    for path in sys.argv[3:]:
        print('pass' if verify(path, name, record) else 'fail')
    return 0


if __name__ == '__main__':
    sys.exit(main())
