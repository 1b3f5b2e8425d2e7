package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func testRing(t *testing.T, primary string, keys map[string][]byte) *Keyring {
	t.Helper()
	kr, err := NewKeyring(primary, keys)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return kr
}

func TestSealOpenRoundTrip(t *testing.T) {
	kr := testRing(t, "k1", map[string][]byte{"k1": testKey(1)})
	for _, pt := range [][]byte{nil, {}, []byte("x"), []byte("a postgres password"), bytes.Repeat([]byte{0xff}, 4096)} {
		s, err := kr.Seal(pt, []byte("env-1"))
		if err != nil {
			t.Fatal(err)
		}
		if s.KeyID != "k1" {
			t.Errorf("KeyID = %q, want k1", s.KeyID)
		}
		// A short plaintext turns up in random bytes by chance ("x" in about
		// one sealing of nine), so only a long one proves anything here.
		if len(pt) >= 8 && bytes.Contains(s.Ciphertext, pt) {
			t.Errorf("ciphertext contains the plaintext")
		}
		got, err := kr.Open(s, []byte("env-1"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Errorf("Open = %q, want %q", got, pt)
		}
	}
}

func TestSealUsesFreshNonces(t *testing.T) {
	kr := testRing(t, "k1", map[string][]byte{"k1": testKey(1)})
	a, _ := kr.Seal([]byte("same"), nil)
	b, _ := kr.Seal([]byte("same"), nil)
	if bytes.Equal(a.Ciphertext[:NonceSize], b.Ciphertext[:NonceSize]) || bytes.Equal(a.Ciphertext, b.Ciphertext) {
		t.Fatal("two seals of the same plaintext share a nonce or a ciphertext")
	}
}

func TestOpenBindsAAD(t *testing.T) {
	kr := testRing(t, "k1", map[string][]byte{"k1": testKey(1)})
	s, err := kr.Seal([]byte("secret"), []byte("env-a"))
	if err != nil {
		t.Fatal(err)
	}
	for _, aad := range [][]byte{[]byte("env-b"), nil, []byte("env-a ")} {
		if _, err := kr.Open(s, aad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("Open with aad %q: err = %v, want ErrDecrypt", aad, err)
		}
	}
}

func TestOpenDetectsTampering(t *testing.T) {
	kr := testRing(t, "k1", map[string][]byte{"k1": testKey(1)})
	s, err := kr.Seal([]byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Ciphertext {
		c := Sealed{KeyID: s.KeyID, Ciphertext: bytes.Clone(s.Ciphertext)}
		c.Ciphertext[i] ^= 0x01
		if _, err := kr.Open(c, nil); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("flipped byte %d: err = %v, want ErrDecrypt", i, err)
		}
	}
	for _, n := range []int{0, 1, NonceSize, len(s.Ciphertext) - 1} {
		c := Sealed{KeyID: s.KeyID, Ciphertext: s.Ciphertext[:n]}
		if _, err := kr.Open(c, nil); !errors.Is(err, ErrDecrypt) {
			t.Errorf("truncated to %d: err = %v, want ErrDecrypt", n, err)
		}
	}
	long := Sealed{KeyID: s.KeyID, Ciphertext: append(bytes.Clone(s.Ciphertext), 0)}
	if _, err := kr.Open(long, nil); !errors.Is(err, ErrDecrypt) {
		t.Errorf("extended: err = %v, want ErrDecrypt", err)
	}
	// Same id, other key: an impostor ring must not open it.
	other := testRing(t, "k1", map[string][]byte{"k1": testKey(2)})
	if _, err := other.Open(s, nil); !errors.Is(err, ErrDecrypt) {
		t.Errorf("other key under the same id: err = %v, want ErrDecrypt", err)
	}
}

func TestOpenUnknownKey(t *testing.T) {
	kr := testRing(t, "k1", map[string][]byte{"k1": testKey(1)})
	s, _ := kr.Seal([]byte("secret"), nil)
	s.KeyID = "k9"
	_, err := kr.Open(s, nil)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
}

func TestRotation(t *testing.T) {
	old := testRing(t, "k1", map[string][]byte{"k1": testKey(1)})
	s1, err := old.Seal([]byte("old secret"), []byte("env"))
	if err != nil {
		t.Fatal(err)
	}
	if old.NeedsReseal(s1) {
		t.Error("NeedsReseal true under the ring that sealed it")
	}
	rotated := testRing(t, "k2", map[string][]byte{"k1": testKey(1), "k2": testKey(2)})
	if rotated.Primary() != "k2" {
		t.Fatalf("Primary = %q", rotated.Primary())
	}
	got, err := rotated.Open(s1, []byte("env"))
	if err != nil || string(got) != "old secret" {
		t.Fatalf("Open old ciphertext after rotation = %q, %v", got, err)
	}
	if !rotated.NeedsReseal(s1) {
		t.Error("NeedsReseal false for a ciphertext of the old key")
	}
	s2, err := rotated.Seal(got, []byte("env"))
	if err != nil {
		t.Fatal(err)
	}
	if s2.KeyID != "k2" || rotated.NeedsReseal(s2) {
		t.Errorf("resealed with %q, NeedsReseal %v", s2.KeyID, rotated.NeedsReseal(s2))
	}
	// The old ring cannot read the new ciphertext.
	if _, err := old.Open(s2, []byte("env")); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old ring on new ciphertext: err = %v, want ErrUnknownKey", err)
	}
}

func TestNewKeyringValidates(t *testing.T) {
	tests := []struct {
		name    string
		primary string
		keys    map[string][]byte
	}{
		{"no keys", "k1", nil},
		{"primary missing", "k2", map[string][]byte{"k1": testKey(1)}},
		{"short key", "k1", map[string][]byte{"k1": testKey(1)[:16]}},
		{"long key", "k1", map[string][]byte{"k1": append(testKey(1), 0)}},
		{"bad primary id", "k 1", map[string][]byte{"k 1": testKey(1)}},
		{"bad other id", "k1", map[string][]byte{"k1": testKey(1), "k:2": testKey(2)}},
		{"empty id", "", map[string][]byte{"": testKey(1)}},
		{"long id", strings.Repeat("a", 33), map[string][]byte{strings.Repeat("a", 33): testKey(1)}},
		{"bad other key size", "k1", map[string][]byte{"k1": testKey(1), "k2": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewKeyring(tt.primary, tt.keys); err == nil {
				t.Fatal("NewKeyring succeeded, want an error")
			}
		})
	}
	key := testKey(7)
	kr := testRing(t, strings.Repeat("a", 32), map[string][]byte{strings.Repeat("a", 32): key})
	s, _ := kr.Seal([]byte("x"), nil)
	key[0] ^= 0xff // the ring keeps its own copy
	if _, err := kr.Open(s, nil); err != nil {
		t.Fatalf("the ring depends on the caller's key slice: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	k1 := base64.StdEncoding.EncodeToString(testKey(1))
	k2 := base64.StdEncoding.EncodeToString(testKey(2))
	short := base64.StdEncoding.EncodeToString(testKey(1)[:31])
	long := base64.StdEncoding.EncodeToString(append(testKey(1), 9))
	good := []struct {
		name    string
		text    string
		primary string
		ids     []string
	}{
		{"one", "k1:" + k1, "k1", []string{"k1"}},
		{"comma", "k2:" + k2 + ",k1:" + k1, "k2", []string{"k2", "k1"}},
		{"newlines and spaces", "\n  k1:" + k1 + "  \r\n\n k2 : " + k2 + "\n", "k1", []string{"k1", "k2"}},
		{"trailing comma", "k1:" + k1 + ",", "k1", []string{"k1"}},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			kr, err := ParseKeys(tt.text)
			if err != nil {
				t.Fatalf("ParseKeys: %v", err)
			}
			if kr.Primary() != tt.primary || strings.Join(kr.KeyIDs(), ",") != strings.Join(tt.ids, ",") {
				t.Errorf("primary %q ids %v, want %q %v", kr.Primary(), kr.KeyIDs(), tt.primary, tt.ids)
			}
			again, err := ParseKeys(kr.Format())
			if err != nil || again.Format() != kr.Format() {
				t.Errorf("Format does not round-trip: %v", err)
			}
		})
	}
	bad := []struct {
		name string
		text string
	}{
		{"empty", ""},
		{"blank", " \n , \n"},
		{"no colon", k1},
		{"empty id", ":" + k1},
		{"bad id", "k/1:" + k1},
		{"id too long", strings.Repeat("k", 33) + ":" + k1},
		{"bad base64", "k1:" + strings.Replace(k1, "A", "*", 1)},
		{"url base64", "k1:" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, KeySize))},
		{"missing padding", "k1:" + strings.TrimRight(k1, "=")},
		{"empty key", "k1:"},
		{"short key", "k1:" + short},
		{"long key", "k1:" + long},
		{"duplicate ids", "k1:" + k1 + ",k1:" + k2},
		{"one bad among good", "k1:" + k1 + "\nk2:" + short},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeys(tt.text)
			if err == nil {
				t.Fatal("ParseKeys succeeded, want an error")
			}
			for _, secret := range []string{k1, k2, short, long, k1[:20], k2[:20]} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains key text", err)
				}
			}
		})
	}
}

func TestKeyFileCreatedThenReused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "nested", "master.key")
	kr, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateKeyFile = created %v, %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode %04o, want 0700", di.Mode().Perm())
	}
	if !strings.HasPrefix(kr.Primary(), "k") || len(kr.Primary()) != 9 {
		t.Errorf("primary id %q, want k+yyyymmdd", kr.Primary())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("key dir holds %d entries, want only the key file", len(entries))
	}
	s, err := kr.Seal([]byte("pw"), nil)
	if err != nil {
		t.Fatal(err)
	}

	again, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreateKeyFile = created %v, %v", created, err)
	}
	if again.Format() != kr.Format() {
		t.Fatal("second load returned different keys")
	}
	if got, err := again.Open(s, nil); err != nil || string(got) != "pw" {
		t.Fatalf("Open with reloaded ring = %q, %v", got, err)
	}
}

func TestKeyFileNeverOverwritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	text := "k2:" + base64.StdEncoding.EncodeToString(testKey(2)) + "\nk1:" + base64.StdEncoding.EncodeToString(testKey(1)) + "\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKeyFile = created %v, %v", created, err)
	}
	if kr.Primary() != "k2" || len(kr.KeyIDs()) != 2 {
		t.Errorf("loaded %v, primary %q", kr.KeyIDs(), kr.Primary())
	}
	got, _ := os.ReadFile(path)
	if string(got) != text {
		t.Fatal("the key file was rewritten")
	}

	// A broken key file is an error, not a reason to make a new one.
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKeyFile(path); err == nil {
		t.Fatal("a malformed key file was accepted")
	}
	if got, _ := os.ReadFile(path); string(got) != "garbage" {
		t.Fatal("a malformed key file was overwritten")
	}
}

func TestKeyFileRefusesLoosePermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	if _, _, err := LoadOrCreateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadOrCreateKeyFile(path)
		if err == nil {
			t.Fatalf("mode %04o accepted", mode)
		}
		if !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: error %q does not tell how to fix it", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKeyFile(path); err != nil {
		t.Fatalf("mode 0400 refused: %v", err)
	}
}

func TestKeyFileRaceAgreesOnOneKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	const n = 16
	rings := make([]*Keyring, n)
	errs := make([]error, n)
	createdCount := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			kr, created, err := LoadOrCreateKeyFile(path)
			rings[i], errs[i] = kr, err
			if created {
				mu.Lock()
				createdCount++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if createdCount != 1 {
		t.Errorf("%d callers report creating the file, want 1", createdCount)
	}
	for i := range rings {
		if rings[i].Format() != rings[0].Format() {
			t.Fatalf("caller %d got different keys", i)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the key file", len(entries))
	}
}

func FuzzParseKeys(f *testing.F) {
	k1 := base64.StdEncoding.EncodeToString(testKey(1))
	k2 := base64.StdEncoding.EncodeToString(testKey(2))
	for _, seed := range []string{
		"", "k1:" + k1, "k1:" + k1 + ",k2:" + k2, "a:" + k1 + "\n\nb:" + k2 + "\n",
		"k1:" + k1 + ",k1:" + k2, "k1:", ":", ",,,", "k1:" + k1[:10], "k-_9:" + k2,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		kr, err := ParseKeys(text)
		if err != nil {
			if kr != nil {
				t.Fatal("non-nil ring with an error")
			}
			return
		}
		pt := []byte("plaintext")
		s, err := kr.Seal(pt, []byte(text))
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if s.KeyID != kr.Primary() {
			t.Fatalf("sealed with %q, primary %q", s.KeyID, kr.Primary())
		}
		got, err := kr.Open(s, []byte(text))
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open = %q, %v", got, err)
		}
		again, err := ParseKeys(kr.Format())
		if err != nil {
			t.Fatalf("ParseKeys(Format()): %v", err)
		}
		if again.Format() != kr.Format() {
			t.Fatal("Format does not round-trip")
		}
		if got, err := again.Open(s, []byte(text)); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("reparsed ring cannot open: %v", err)
		}
	})
}

func TestDerive(t *testing.T) {
	a, err := ParseKeys("k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ParseKeys("k2:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, KeySize)))
	if !bytes.Equal(a.Derive("x"), a.Derive("x")) {
		t.Error("Derive is not deterministic")
	}
	if bytes.Equal(a.Derive("x"), a.Derive("y")) || bytes.Equal(a.Derive("x"), b.Derive("x")) {
		t.Error("derived keys collide across purposes or master keys")
	}
}
