package secrets

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// maxKeyFileSize bounds what loadKeyFile reads: a ring of hundreds of keys
// fits easily, a wrong path to a huge file does not get read whole.
const maxKeyFileSize = 1 << 20

// LoadOrCreateKeyFile returns the keyring kept in the file at path, the
// embedded mode's master key, creating the file with one new key (id
// "k"+yyyymmdd) when it does not exist yet; created reports that.
//
// The file is written to a private temporary file first and then hard-linked
// into place, which fails rather than replaces when path exists: an existing
// key file is never overwritten (losing it would make every stored credential
// unreadable), two processes racing to create it agree on the winner's keys,
// and a crash mid-write never leaves a truncated key file behind. The parent
// directory is created with mode 0700 if missing.
//
// A key file readable or writable by group or others is refused rather than
// used, so a leaked permission is noticed instead of silently trusted.
func LoadOrCreateKeyFile(path string) (kr *Keyring, created bool, err error) {
	kr, err = loadKeyFile(path)
	if err == nil {
		return kr, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("secrets: create the key file's directory: %w", err)
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, false, err
	}
	id := "k" + time.Now().UTC().Format("20060102")
	kr, err = NewKeyring(id, map[string][]byte{id: key})
	if err != nil {
		return nil, false, err
	}
	won, err := createExclusive(path, []byte(kr.Format()))
	if err != nil {
		return nil, false, err
	}
	if !won {
		// Another process created the file first: its keys are the keys.
		kr, err = loadKeyFile(path)
		if err != nil {
			return nil, false, err
		}
		return kr, false, nil
	}
	return kr, true, nil
}

// loadKeyFile reads and parses a key file after checking its permissions; a
// missing file is reported as fs.ErrNotExist.
func loadKeyFile(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("secrets: open the key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secrets: stat the key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("secrets: the key file %s is not a regular file", path)
	}
	// Windows has no Unix permission bits to check.
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets: the key file %s is accessible by group or others (mode %04o); "+
			"restrict it with `chmod 600 %s` and restart", path, fi.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("secrets: read the key file: %w", err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("secrets: the key file %s is too large to be a key file", path)
	}
	kr, err := ParseKeys(string(data))
	if err != nil {
		return nil, fmt.Errorf("secrets: the key file %s: %w", path, err)
	}
	return kr, nil
}

// createExclusive writes data to a new file at path with mode 0600 unless
// path already exists, in which case it reports won == false and leaves the
// existing file alone. The data goes to a temporary file (created with
// O_EXCL by os.CreateTemp) that is synced and then linked to path, so path
// appears complete or not at all.
func createExclusive(path string, data []byte) (won bool, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("secrets: create the key file: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return false, fmt.Errorf("secrets: create the key file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("secrets: write the key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("secrets: write the key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("secrets: write the key file: %w", err)
	}
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("secrets: create the key file: %w", err)
	}
	syncDir(filepath.Dir(path))
	return true, nil
}

// syncDir makes a new directory entry durable where the platform allows; a
// failure only weakens durability after a power loss, so it is ignored.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
