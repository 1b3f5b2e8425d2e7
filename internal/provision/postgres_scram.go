package provision

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
)

// SCRAM parameters of the verifiers the Postgres provisioner sends: those
// PostgreSQL itself uses by default (scram_iterations, a 16-byte salt).
const (
	scramIterations = 4096
	scramSaltSize   = 16
)

// scramSHA256Verifier computes the SCRAM-SHA-256 verifier PostgreSQL stores
// for password (RFC 5802 and RFC 7677):
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// Sending this instead of the password in ALTER ROLE … PASSWORD keeps the
// plaintext off the server: PostgreSQL recognizes the format and stores it
// as is. PostgreSQL runs passwords through SASLprep first; the passwords
// made here are ASCII, which SASLprep leaves unchanged.
func scramSHA256Verifier(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return "SCRAM-SHA-256$" + strconv.Itoa(iterations) + ":" + b64(salt) +
		"$" + b64(storedKey[:]) + ":" + b64(serverKey), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}
