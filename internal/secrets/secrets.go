// Package secrets encrypts credentials at rest (environment database
// passwords and tokens) with AES-256-GCM under a master key ring, so a copy
// of the control-plane database alone does not reveal them. Every ciphertext
// records the id of the key that sealed it: the primary key can change while
// older ciphertexts stay readable, and re-sealing can happen lazily.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// KeySize is the size in bytes of every master key (AES-256).
const KeySize = 32

// NonceSize is the size in bytes of the random GCM nonce prefixed to every
// ciphertext.
const NonceSize = 12

// Errors returned by Open; compare with errors.Is. They never carry key
// material or plaintext.
var (
	// ErrUnknownKey means the ciphertext names a key the ring does not hold
	// (a retired key was removed from the configuration too early, say).
	ErrUnknownKey = errors.New("secrets: ciphertext sealed with a key not in the keyring")
	// ErrDecrypt means authentication failed: the ciphertext was altered,
	// truncated, or opened with other associated data than it was sealed with.
	ErrDecrypt = errors.New("secrets: ciphertext could not be authenticated")
)

// keyIDPattern restricts key ids to characters that survive the text format
// (no separators) and a log line unquoted.
var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Keyring holds the master keys by id and names the primary one, which seals
// everything new; the others only open what they sealed in the past. A
// Keyring is immutable and safe for concurrent use.
type Keyring struct {
	primary string
	ids     []string // primary first, then the others in the order given or sorted
	raw     map[string][]byte
	aead    map[string]cipher.AEAD
}

// Sealed is a ciphertext with the id of the key that sealed it. Ciphertext is
// the 12-byte nonce followed by the GCM output (ciphertext and tag).
type Sealed struct {
	KeyID      string
	Ciphertext []byte
}

// NewKeyring returns a ring of keys (each KeySize bytes, ids matching
// ^[A-Za-z0-9_-]{1,32}$) whose primary is keys[primary]. The key bytes are
// copied, so the caller may wipe its slices.
func NewKeyring(primary string, keys map[string][]byte) (*Keyring, error) {
	ids := make([]string, 0, len(keys))
	for id := range keys {
		if id != primary {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return newKeyring(append([]string{primary}, ids...), keys)
}

// newKeyring builds a ring from ids in order (the first is the primary).
func newKeyring(ids []string, keys map[string][]byte) (*Keyring, error) {
	if len(ids) == 0 || len(keys) == 0 {
		return nil, errors.New("secrets: the keyring needs at least one key")
	}
	primary := ids[0]
	if _, ok := keys[primary]; !ok {
		return nil, errors.New("secrets: the primary key id is not among the keys")
	}
	k := &Keyring{
		primary: primary,
		ids:     ids,
		raw:     make(map[string][]byte, len(keys)),
		aead:    make(map[string]cipher.AEAD, len(keys)),
	}
	for _, id := range ids {
		key := keys[id]
		if !keyIDPattern.MatchString(id) {
			return nil, fmt.Errorf("secrets: invalid key id %q: use 1 to 32 of A-Z a-z 0-9 _ -", id)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("secrets: key %q is %d bytes, want %d", id, len(key), KeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("secrets: key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("secrets: key %q: %w", id, err)
		}
		k.raw[id] = slices.Clone(key)
		k.aead[id] = aead
	}
	return k, nil
}

// Primary returns the id of the key that seals new ciphertexts.
func (k *Keyring) Primary() string { return k.primary }

// KeyIDs returns the ids of the ring, the primary first.
func (k *Keyring) KeyIDs() []string { return slices.Clone(k.ids) }

// Seal encrypts plaintext with the primary key and a fresh random nonce.
// aad binds the ciphertext to its context (the environment id, say): Open
// fails unless given the same aad, so a ciphertext copied to another row
// does not decrypt there.
func (k *Keyring) Seal(plaintext, aad []byte) (Sealed, error) {
	aead := k.aead[k.primary]
	out := make([]byte, NonceSize, NonceSize+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return Sealed{}, fmt.Errorf("secrets: nonce: %w", err)
	}
	out = aead.Seal(out, out[:NonceSize], plaintext, aad)
	return Sealed{KeyID: k.primary, Ciphertext: out}, nil
}

// Open decrypts s with the key it names, which need not be the primary, so
// ciphertexts sealed before a key rotation stay readable. It returns
// ErrUnknownKey or ErrDecrypt on failure.
func (k *Keyring) Open(s Sealed, aad []byte) ([]byte, error) {
	aead, ok := k.aead[s.KeyID]
	if !ok {
		return nil, ErrUnknownKey
	}
	if len(s.Ciphertext) < NonceSize+aead.Overhead() {
		return nil, ErrDecrypt
	}
	pt, err := aead.Open(nil, s.Ciphertext[:NonceSize], s.Ciphertext[NonceSize:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// NeedsReseal reports whether s was sealed with a key other than the
// primary, so a caller can re-seal it and eventually retire the old key.
func (k *Keyring) NeedsReseal(s Sealed) bool { return s.KeyID != k.primary }

// Format returns the ring in the text format ParseKeys reads, primary first,
// one entry per line. The result contains key material: write it only to a
// protected file.
func (k *Keyring) Format() string {
	var b strings.Builder
	for _, id := range k.ids {
		b.WriteString(id)
		b.WriteByte(':')
		b.WriteString(base64.StdEncoding.EncodeToString(k.raw[id]))
		b.WriteByte('\n')
	}
	return b.String()
}

// ParseKeys reads a keyring from its text form, as found in the key file or
// the ENVPLANE_MASTER_KEY variable: entries "id:base64(32 bytes)" separated by
// commas or newlines, the first being the primary. Blank entries and
// surrounding spaces are ignored. Errors name the entry by position and id,
// never its key text, since a malformed entry may still be mostly secret.
func ParseKeys(text string) (*Keyring, error) {
	entries := strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == '\n' })
	var ids []string
	keys := make(map[string][]byte)
	n := 0
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		n++
		id, b64, ok := strings.Cut(e, ":")
		if !ok {
			return nil, fmt.Errorf("secrets: key entry %d: want id:base64-key", n)
		}
		id, b64 = strings.TrimSpace(id), strings.TrimSpace(b64)
		if !keyIDPattern.MatchString(id) {
			return nil, fmt.Errorf("secrets: key entry %d: invalid key id: use 1 to 32 of A-Z a-z 0-9 _ -", n)
		}
		if _, dup := keys[id]; dup {
			return nil, fmt.Errorf("secrets: key entry %d: duplicate key id %q", n, id)
		}
		key, err := base64.StdEncoding.Strict().DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("secrets: key entry %d (%q): key is not valid standard base64", n, id)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("secrets: key entry %d (%q): key is %d bytes, want %d", n, id, len(key), KeySize)
		}
		ids = append(ids, id)
		keys[id] = key
	}
	if len(ids) == 0 {
		return nil, errors.New("secrets: no keys given")
	}
	return newKeyring(ids, keys)
}

// GenerateKey returns a new random key of KeySize bytes.
func GenerateKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("secrets: generate key: %w", err)
	}
	return key, nil
}

// Derive returns a key for one purpose (such as signing page tokens),
// derived from the primary key so every replica sharing the master key
// derives the same one, and no purpose's key reveals another's.
func (k *Keyring) Derive(purpose string) []byte {
	mac := hmac.New(sha256.New, k.raw[k.primary])
	mac.Write([]byte("envplane derive: " + purpose))
	return mac.Sum(nil)
}
