package smtpd

import (
	"bytes"
	"errors"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SASL mechanism names.
const (
	mechPlain = sasl.Plain
	mechLogin = sasl.Login
)

// checkCredentials verifies a user name and password; it returns nil or an
// error that go-smtp sends as is (a *smtp.SMTPError).
type checkCredentials func(username, password string) error

// newPlainServer is the PLAIN mechanism (RFC 4616): one message
// "authzid NUL authcid NUL passwd". An authorization identity other than
// empty or the authentication identity is refused: nobody may act as
// someone else.
func newPlainServer(check checkCredentials) sasl.Server {
	return &funnelSASL{sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			return replyAuthzid().ToSMTP()
		}
		return check(username, password)
	})}
}

// loginServer is the LOGIN mechanism (draft-murchison-sasl-login), which
// go-sasl has as a client only: the server asks "Username:" then
// "Password:"; a client may send the user name as the initial response
// (AUTH LOGIN dXNlcg==).
type loginServer struct {
	check    checkCredentials
	state    int
	username string
}

const (
	loginStart = iota
	loginWantUser
	loginWantPass
	loginDone
)

func newLoginServer(check checkCredentials) sasl.Server {
	return &funnelSASL{&loginServer{check: check}}
}

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.state {
	case loginStart:
		if response == nil {
			s.state = loginWantUser
			return []byte("Username:"), false, nil
		}
		s.username = string(response)
		s.state = loginWantPass
		return []byte("Password:"), false, nil
	case loginWantUser:
		s.username = string(response)
		s.state = loginWantPass
		return []byte("Password:"), false, nil
	case loginWantPass:
		s.state = loginDone
		if bytes.IndexByte(response, 0) >= 0 || bytes.IndexByte([]byte(s.username), 0) >= 0 {
			return nil, true, replyAuthMalformed().ToSMTP()
		}
		return nil, true, s.check(s.username, string(response))
	}
	return nil, true, sasl.ErrUnexpectedClientResponse
}

// funnelSASL makes sure that no SASL error reaches the client as text:
// go-smtp sends a plain error's message after "454 4.7.0".
type funnelSASL struct{ inner sasl.Server }

func (f *funnelSASL) Next(response []byte) ([]byte, bool, error) {
	ch, done, err := f.inner.Next(response)
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			err = replyAuthMalformed().ToSMTP()
		}
	}
	return ch, done, err
}
