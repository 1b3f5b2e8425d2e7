// Package pagetoken makes the opaque page tokens of every List call. A token
// carries the key of the last item served and a digest of the query it
// belongs to, so it cannot be replayed against another query.
package pagetoken

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
)

// Page size bounds shared by every List call (AIP-158).
const (
	DefaultSize = 50
	MaxSize     = 1000
)

// ErrInvalid means the token is malformed or belongs to another query.
var ErrInvalid = errors.New("page token is malformed or was issued for a different query")

type payload struct {
	After string `json:"a"`
	Query string `json:"q"`
}

// Size applies the default and the maximum to a requested page size, which
// the contract has already checked is not negative.
func Size(requested int32) int {
	switch {
	case requested <= 0:
		return DefaultSize
	case requested > MaxSize:
		return MaxSize
	default:
		return int(requested)
	}
}

// Encode returns the token continuing after key for the query described by
// parts (for example the organization id a list is scoped to).
func Encode(after string, parts ...string) string {
	b, _ := json.Marshal(payload{After: after, Query: digest(parts)})
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode returns the key a token continues after. An empty token is the
// first page (""). A token of another query is ErrInvalid.
func Decode(token string, parts ...string) (string, error) {
	if token == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", ErrInvalid
	}
	var p payload
	if err := json.Unmarshal(raw, &p); err != nil || p.After == "" {
		return "", ErrInvalid
	}
	if p.Query != digest(parts) {
		return "", ErrInvalid
	}
	return p.After, nil
}

func digest(parts []string) string {
	h := sha256.New()
	for _, p := range parts {
		// Length-prefix each part so ("ab","c") and ("a","bc") differ.
		var n [8]byte
		l := len(p)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
