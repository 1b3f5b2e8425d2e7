// Package idempotency fingerprints create requests, so that a create retried
// with the same request_id is recognized as the same request even after the
// resource it made has changed.
package idempotency

import (
	"crypto/sha256"
	"encoding/hex"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Digest returns a digest of m without the fields named in omit (secrets
// must be omitted: a digest of a weak password would let anyone with the
// control plane test guesses).
func Digest(m proto.Message, omit ...protoreflect.Name) string {
	c := proto.Clone(m)
	r := c.ProtoReflect()
	for _, name := range omit {
		if fd := r.Descriptor().Fields().ByName(name); fd != nil {
			r.Clear(fd)
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		// A message that came off the wire always marshals; fall back to "no digest".
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
