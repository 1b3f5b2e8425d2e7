package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// SecretPrefix starts every token secret so that leaked tokens are easy to
// recognize (secret scanners, logs, shell history).
const SecretPrefix = "envp_"

const secretBytes = 32

var secretLen = len(SecretPrefix) + base64.RawURLEncoding.EncodedLen(secretBytes)

// NewSecret returns a fresh high-entropy token secret and its hash.
func NewSecret() (secret string, hash []byte) {
	var b [secretBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	secret = SecretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, HashSecret(secret)
}

// HashSecret is what the store keeps of a secret. The secret has 256 bits of
// entropy, so a plain SHA-256 (no salt, no stretching) is enough and keeps
// lookup a single indexed read.
func HashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// DisplayPrefix is the part of a secret shown in listings.
func DisplayPrefix(secret string) string {
	return secret[:len(SecretPrefix)+6]
}

// wellFormed reports whether s looks like a secret NewSecret made.
func wellFormed(s string) bool {
	if len(s) != secretLen || !strings.HasPrefix(s, SecretPrefix) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s[len(SecretPrefix):])
	return err == nil
}

// ParseAuthorization extracts the secret of an "Authorization: Bearer …"
// header value. ok is false for a missing or malformed header.
func ParseAuthorization(header string) (secret string, present, ok bool) {
	if header == "" {
		return "", false, false
	}
	scheme, value, found := strings.Cut(header, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", true, false
	}
	value = strings.TrimSpace(value)
	return value, true, wellFormed(value)
}
