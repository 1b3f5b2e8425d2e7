package hostname

import (
	"errors"
	"strings"
)

// ErrReserved reports a name that can never be an environment's hostname:
// it names this machine or its link (localhost, loopback and link-local
// names), is a single label, or belongs to the API itself.
var ErrReserved = errors.New("hostname: reserved name")

// reservedError carries a message for API users and matches ErrReserved.
type reservedError struct{ msg string }

func (e *reservedError) Error() string        { return e.msg }
func (e *reservedError) Is(target error) bool { return target == ErrReserved }

// reservedNames are exact names for this machine in the hosts files and
// resolvers of common systems.
var reservedNames = map[string]bool{
	"localhost.localdomain":   true,
	"localhost6.localdomain6": true,
	"localhost4.localdomain4": true,
}

// reservedSuffixes are special-use domains (RFC 6761, RFC 6762, RFC 8375 and
// the reverse-mapping zones) whose names never belong to one organization:
// they resolve to this machine, to the local link, or nowhere.
var reservedSuffixes = []string{"localhost", "localdomain", "local", "arpa", "invalid", "home.arpa", "internal"}

// Reserved returns an error matching ErrReserved when the normalized name
// must never route to an environment: a single label (intranet,
// ip6-localhost), localhost and every name under it, the other names of
// loopback and the local link, or one of apiHostnames (normalized). It
// returns nil otherwise. IP literals never get this far: Normalize refuses
// them.
func Reserved(name string, apiHostnames []string) error {
	if !strings.Contains(name, ".") {
		return &reservedError{"hostname: " + quote(name) + " is a single label; give a fully qualified name such as app.example.com"}
	}
	if reservedNames[name] {
		return &reservedError{"hostname: " + quote(name) + " names this machine"}
	}
	for _, suffix := range reservedSuffixes {
		if name == suffix || strings.HasSuffix(name, "."+suffix) {
			return &reservedError{"hostname: " + quote(name) + " is under ." + suffix + ", a special-use domain no organization owns"}
		}
	}
	for _, api := range apiHostnames {
		if name == api {
			return &reservedError{"hostname: " + quote(name) + " is a hostname of the API itself"}
		}
	}
	return nil
}

// Under reports whether name is a subdomain of domain (both normalized):
// "acme-dev.localhost" is under "localhost", "localhost" itself is not.
func Under(name, domain string) bool {
	return len(name) > len(domain)+1 && strings.HasSuffix(name, domain) && name[len(name)-len(domain)-1] == '.'
}

func quote(s string) string { return `"` + s + `"` }
