package query

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/filter"
	"github.com/envplane/envplane/internal/schema"
)

// MaxTokenLength is the longest page token, in characters: the API's limit
// on ListRecords page_token.
const MaxTokenLength = 4096

// MinKeyLength is the shortest key NewCursors takes, so that tokens cannot
// be forged by guessing it.
const MinKeyLength = 32

// ErrCursorTooLong means a page's keyset position does not fit in a page
// token: its order keys hold very long text.
var ErrCursorTooLong = errors.New("query: the keyset position is too long for a page token")

// Fingerprint identifies a query a page token may continue: the
// environment, the object and its definition's version, the filter and the
// order. Two requests that differ in any of these get different
// fingerprints, so a token cannot be replayed against another query (where
// its keyset position means nothing) or survive a change of definition.
type Fingerprint string

// NewFingerprint returns the fingerprint of a query. The filter enters in
// its parsed form, so spellings of one filter that parse to the same tree
// ("a=1" and "a = 1") share page tokens.
func NewFingerprint(environment string, obj *schema.Object, f filter.Expr, order []driver.OrderBy) Fingerprint {
	h := sha256.New()
	put := func(s string) { writePart(h, s) }
	put("envplane/query/fingerprint/v1")
	put(environment)
	put(obj.Name)
	put(strconv.FormatInt(obj.Version, 10))
	canonFilter(put, f)
	put(strconv.Itoa(len(order)))
	for _, o := range order {
		put(o.Field)
		put(strconv.FormatBool(o.Desc))
	}
	return Fingerprint(hex.EncodeToString(h.Sum(nil)))
}

// canonFilter writes a filter tree as an unambiguous sequence of parts.
func canonFilter(put func(string), e filter.Expr) {
	terms := func(kind string, ts []filter.Expr) {
		put(kind)
		put(strconv.Itoa(len(ts)))
		for _, t := range ts {
			canonFilter(put, t)
		}
	}
	switch x := e.(type) {
	case nil:
		put("all")
	case filter.And:
		terms("and", x.Terms)
	case *filter.And:
		terms("and", x.Terms)
	case filter.Or:
		terms("or", x.Terms)
	case *filter.Or:
		terms("or", x.Terms)
	case filter.Not:
		put("not")
		canonFilter(put, x.Term)
	case *filter.Not:
		put("not")
		canonFilter(put, x.Term)
	case filter.Compare:
		canonCompare(put, x)
	case *filter.Compare:
		canonCompare(put, *x)
	case filter.Prefix:
		put("prefix")
		put(x.Field)
		put(x.Prefix)
	case *filter.Prefix:
		put("prefix")
		put(x.Field)
		put(x.Prefix)
	default:
		put(fmt.Sprintf("%T:%v", e, e))
	}
}

// canonCompare writes a comparison, its value in the typed form of page
// tokens so that 1 (integer) and 1.0 (number) differ.
func canonCompare(put func(string), c filter.Compare) {
	put("compare")
	put(c.Field)
	put(string(c.Op))
	if v, err := encodeValue(c.Value); err == nil {
		if v == nil {
			put("null")
		} else {
			put(*v)
		}
		return
	}
	put(fmt.Sprintf("%T:%v", c.Value, c.Value))
}

// Cursors makes and reads page tokens. A token holds the keyset position
// (the order keys and id of the last record served) in a typed JSON form
// that keeps every value's Go type exactly, followed by an HMAC over the
// position and the query's fingerprint: a client can neither forge a
// position nor carry a token to another query.
type Cursors struct {
	key []byte
}

// NewCursors returns Cursors that sign with key, which must be secret, at
// least MinKeyLength bytes and the same on every server of a deployment
// (tokens are verified by whichever server gets the next request).
func NewCursors(key []byte) (*Cursors, error) {
	if len(key) < MinKeyLength {
		return nil, fmt.Errorf("query: page token key has %d bytes, want at least %d", len(key), MinKeyLength)
	}
	return &Cursors{key: append([]byte(nil), key...)}, nil
}

// macLength is the length of a token's HMAC-SHA256.
const macLength = sha256.Size

// mac returns the HMAC of a position for the query fp. The domain string
// versions the format: tokens of another format do not verify.
func (c *Cursors) mac(fp Fingerprint, payload []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	writePart(m, "envplane/query/cursor/v1")
	writePart(m, string(fp))
	m.Write(payload)
	return m.Sum(nil)
}

// writePart hashes s length-prefixed, so that the parts ("ab", "c") and
// ("a", "bc") hash differently.
func writePart(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// Encode returns the token continuing query fp after the keyset position
// after (driver.Query.After: the order keys, then the id). Values are nil,
// string, int64, float64 (finite), bool or time.Time; another type is an
// error, as is a position too long for a token (ErrCursorTooLong).
func (c *Cursors) Encode(fp Fingerprint, after []any) (string, error) {
	vals := make([]*string, len(after))
	for i, v := range after {
		enc, err := encodeValue(v)
		if err != nil {
			return "", fmt.Errorf("query: page token value %d: %w", i, err)
		}
		vals[i] = enc
	}
	payload, err := json.Marshal(vals)
	if err != nil {
		return "", fmt.Errorf("query: page token: %w", err)
	}
	raw := append(payload, c.mac(fp, payload)...)
	if base64.RawURLEncoding.EncodedLen(len(raw)) > MaxTokenLength {
		return "", ErrCursorTooLong
	}
	return base64.RawURLEncoding.EncodeToString(raw), nil
}

// invalidToken is the one error every bad token gets: telling a forger which
// check failed would only help them.
func invalidToken() *Error {
	return &Error{
		Reason:  ReasonInvalidPageToken,
		Message: "page_token is malformed or was issued for a different query; start again without it",
	}
}

// Decode returns the keyset position a token of query fp carries, checked
// against obj and order: len(order)+1 values, each nil or of its field's Go
// type, the last a non-empty id. An empty token is the first page (nil).
// Any other failure is an *Error with reason INVALID_PAGE_TOKEN.
func (c *Cursors) Decode(fp Fingerprint, token string, obj *schema.Object, order []driver.OrderBy) ([]any, error) {
	if token == "" {
		return nil, nil
	}
	if len(token) > MaxTokenLength || !isBase64URL(token) {
		return nil, invalidToken()
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) <= macLength {
		return nil, invalidToken()
	}
	payload, sum := raw[:len(raw)-macLength], raw[len(raw)-macLength:]
	if !hmac.Equal(sum, c.mac(fp, payload)) {
		return nil, invalidToken()
	}
	// The position is authentic: ours, for this query. It is still checked
	// against the definition, in case a bug or a key shared across versions
	// lets a stale token through.
	var vals []*string
	if err := json.Unmarshal(payload, &vals); err != nil || len(vals) != len(order)+1 {
		return nil, invalidToken()
	}
	after := make([]any, len(vals))
	for i, enc := range vals {
		v, err := decodeValue(enc)
		if err != nil {
			return nil, invalidToken()
		}
		field := schema.FieldID
		if i < len(order) {
			field = order[i].Field
		}
		typ, ok := fieldType(obj, field)
		if !ok || !valueOfType(typ, v) || (field == schema.FieldID && v == nil) {
			return nil, invalidToken()
		}
		after[i] = v
	}
	return after, nil
}

// isBase64URL reports whether s holds only the base64url alphabet: the
// decoder skips line breaks, which would give one token many spellings.
func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case 'A' <= b && b <= 'Z', 'a' <= b && b <= 'z', '0' <= b && b <= '9', b == '-', b == '_':
		default:
			return false
		}
	}
	return true
}

// valueOfType reports whether v (decoded from a token) is nil or of the Go
// type of a field of type typ.
func valueOfType(typ string, v any) bool {
	if v == nil {
		return true
	}
	switch v.(type) {
	case string:
		return typ == schema.TypeText || typ == schema.TypeSelect || typ == schema.TypeDate
	case int64:
		return typ == schema.TypeInteger
	case float64:
		return typ == schema.TypeNumber
	case bool:
		return typ == schema.TypeBoolean
	case time.Time:
		return typ == schema.TypeTimestamp
	}
	return false
}

// Typed value tags: the first byte of an encoded value. JSON alone would
// lose int64 beyond 2^53, a float's exact bits, the type of a time and any
// string that is not UTF-8.
const (
	tagString = 's' // UTF-8 text as is
	tagBytes  = 'x' // text that is not UTF-8, base64url
	tagInt    = 'i' // decimal int64
	tagFloat  = 'f' // shortest decimal that parses back to the same float64
	tagBool   = 'b' // "true" or "false"
	tagTime   = 't' // Unix seconds "." nine digits of nanoseconds, UTC
)

// encodeValue returns the typed form of v; nil encodes as JSON null.
func encodeValue(v any) (*string, error) {
	var s string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		if utf8.ValidString(x) {
			s = string(tagString) + x
		} else {
			s = string(tagBytes) + base64.RawURLEncoding.EncodeToString([]byte(x))
		}
	case int64:
		s = string(tagInt) + strconv.FormatInt(x, 10)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, errors.New("float is not finite")
		}
		s = string(tagFloat) + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		s = string(tagBool) + strconv.FormatBool(x)
	case time.Time:
		s = fmt.Sprintf("%c%d.%09d", tagTime, x.Unix(), x.Nanosecond())
	default:
		return nil, fmt.Errorf("%T is not a keyset value", v)
	}
	return &s, nil
}

// decodeValue reads a typed form back; it accepts only what encodeValue
// writes.
func decodeValue(enc *string) (any, error) {
	if enc == nil {
		return nil, nil
	}
	s := *enc
	if s == "" {
		return nil, errors.New("empty value")
	}
	body := s[1:]
	switch s[0] {
	case tagString:
		return body, nil
	case tagBytes:
		b, err := base64.RawURLEncoding.Strict().DecodeString(body)
		if err != nil || utf8.Valid(b) {
			return nil, errors.New("bad bytes")
		}
		return string(b), nil
	case tagInt:
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil || strconv.FormatInt(n, 10) != body {
			return nil, errors.New("bad integer")
		}
		return n, nil
	case tagFloat:
		f, err := strconv.ParseFloat(body, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errors.New("bad float")
		}
		return f, nil
	case tagBool:
		switch body {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, errors.New("bad bool")
	case tagTime:
		sec, nsec, ok := strings.Cut(body, ".")
		if !ok || len(nsec) != 9 {
			return nil, errors.New("bad time")
		}
		secs, err1 := strconv.ParseInt(sec, 10, 64)
		nanos, err2 := strconv.ParseInt(nsec, 10, 64)
		if err1 != nil || err2 != nil || nanos < 0 {
			return nil, errors.New("bad time")
		}
		return time.Unix(secs, nanos).UTC(), nil
	}
	return nil, errors.New("unknown tag")
}
