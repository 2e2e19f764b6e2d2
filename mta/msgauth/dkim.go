package msgauth

import (
	"context"
	"errors"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMResult is the verification of one DKIM-Signature field.
type DKIMResult struct {
	// Result is pass, fail (the signature or body hash does not match),
	// permerror (malformed signature, no or bad key, expired) or
	// temperror (the key could not be fetched).
	Result Result
	// Domain is the signing domain (d=), lower case; Identifier the
	// agent or user identifier (i=, "@d" by default).
	Domain     string
	Identifier string
	// Reason explains a result other than pass.
	Reason string
}

// VerifyDKIM verifies every DKIM-Signature of a message (up to
// MaxDKIMSignatures), read from msg: the header block and the body, lines
// ending in CRLF, as received. It returns one result per signature in
// header order, and none for an unsigned message. msg may not be read to
// its end.
func (c *Checker) VerifyDKIM(ctx context.Context, msg io.Reader) []DKIMResult {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	vs, err := dkim.VerifyWithOptions(msg, &dkim.VerifyOptions{
		LookupTXT:        c.lookupTXT(ctx),
		MaxVerifications: c.opts.MaxDKIMSignatures,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		// Reading the message failed, or the header is malformed: no
		// signature can be trusted. go-msgauth may then return
		// verifications that look valid; they are not.
		if len(vs) == 0 {
			return []DKIMResult{{Result: ResultPermError, Reason: err.Error()}}
		}
		out := make([]DKIMResult, len(vs))
		for i, v := range vs {
			out[i] = DKIMResult{Result: ResultTempError, Domain: strings.ToLower(v.Domain), Identifier: v.Identifier, Reason: err.Error()}
		}
		return out
	}
	out := make([]DKIMResult, 0, len(vs))
	for _, v := range vs {
		r := DKIMResult{Result: ResultPass, Domain: strings.ToLower(v.Domain), Identifier: v.Identifier}
		switch {
		case v.Err == nil:
		case dkim.IsTempFail(v.Err):
			r.Result, r.Reason = ResultTempError, v.Err.Error()
		case dkim.IsPermFail(v.Err):
			r.Result, r.Reason = ResultPermError, v.Err.Error()
		default:
			r.Result, r.Reason = ResultFail, v.Err.Error()
		}
		out = append(out, r)
	}
	return out
}
