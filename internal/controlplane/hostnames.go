package controlplane

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// takenMessage is the proof message of a claim whose hostname another
// environment proved ownership of: it says what happened without naming the
// environment or its organization.
const takenMessage = "another environment proved ownership of this hostname more recently; prove it again to route it here"

// storedProof is the JSON form of the parts of a HostnameProof kept in the
// hostname_proof column; the state and the next check have columns of their
// own, for the unique index of verified hostnames and the check queue.
type storedProof struct {
	Method       string    `json:"method,omitempty"`
	Token        string    `json:"token,omitempty"`
	VerifyTime   time.Time `json:"verify_time,omitzero"`
	CheckTime    time.Time `json:"check_time,omitzero"`
	Failures     int       `json:"failures,omitempty"`
	Message      string    `json:"message,omitempty"`
	FailingSince time.Time `json:"failing_since,omitzero"`
}

// encodeProof renders the hostname_proof column of p.
func encodeProof(p HostnameProof) []byte {
	b, err := json.Marshal(storedProof{
		Method: p.Method, Token: p.Token, VerifyTime: p.VerifyTime.UTC(), CheckTime: p.CheckTime.UTC(),
		Failures: p.Failures, Message: p.Message, FailingSince: p.FailingSince.UTC(),
	})
	if err != nil {
		panic(err) // strings, ints and times always marshal
	}
	return b
}

// decodeProof reads the hostname_proof column back into p, whose State and
// NextCheckTime the caller has set from their columns.
func decodeProof(b []byte, p *HostnameProof) error {
	var sp storedProof
	if err := json.Unmarshal(b, &sp); err != nil {
		return fmt.Errorf("bad stored hostname proof: %w", err)
	}
	p.Method, p.Token, p.VerifyTime, p.CheckTime = sp.Method, sp.Token, utc(sp.VerifyTime), utc(sp.CheckTime)
	p.Failures, p.Message, p.FailingSince = sp.Failures, sp.Message, utc(sp.FailingSince)
	return nil
}

// utc is t in UTC, keeping the zero time zero (its UTC() is not the zero
// value cmp compares with).
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// demoted is the proof of a claim whose hostname another environment took:
// pending again, checked again soon, with a message saying why.
func demoted(p HostnameProof, now time.Time) HostnameProof {
	p.State = HostnamePending
	p.FailingSince = time.Time{}
	p.Message = takenMessage
	if p.Token == "" {
		p.Token = newChallengeToken()
	}
	p.NextCheckTime = now
	return p
}

// newChallengeToken returns a fresh challenge: 32 lowercase hex characters.
func newChallengeToken() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// proofState is the hostname_state column of p. A Proof whose State is
// empty, as callers that bind hostnames without checks (tests, tools) leave
// it, is stored verified: the service always sets the state it means.
func proofState(p HostnameProof) string {
	if p.State == "" {
		return HostnameVerified
	}
	return p.State
}
