// Package hostname normalizes and validates the hostnames that route requests
// to environments.
//
// The same normalization must run when an environment's hostname is written
// and when a request's Host header or :authority is looked up; otherwise a
// name stored as "bücher.example" would never match a request for
// "XN--BCHER-KVA.example.". Normalize is the single implementation used on
// both sides: it lowercases, drops one trailing dot, converts internationalized
// names to their ASCII (punycode) form and validates the result as a DNS name.
// FromHost wraps it for the lookup side, where a port may be present and an
// invalid value is simply not a routing hint.
package hostname

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits from RFC 1035 section 2.3.4, measured on the ASCII form of a name
// without its trailing dot.
const (
	// MaxLength is the longest hostname Normalize accepts, in ASCII characters.
	MaxLength = 253
	// MaxLabelLength is the longest label (the part between two dots) Normalize
	// accepts, in ASCII characters.
	MaxLabelLength = 63
)

// maxInputBytes bounds the raw input before any IDNA processing so that an
// oversized Host header cannot make normalization expensive. A valid name
// needs far fewer bytes: even when every output character comes from a
// multi-byte rune the input stays well below this.
const maxInputBytes = 4096

// The sentinel errors let callers map a failure to a precise API error with
// errors.Is. Every error returned by Normalize matches ErrInvalid; errors
// about length additionally match ErrTooLong and errors about IP addresses
// additionally match ErrIPLiteral, so callers that distinguish them must test
// the specific sentinels before ErrInvalid.
var (
	// ErrInvalid reports a value that is not an acceptable hostname: bad
	// characters, empty labels, misplaced hyphens, a port, invalid
	// internationalized text, and every more specific error below.
	ErrInvalid = errors.New("hostname: invalid hostname")
	// ErrTooLong reports a name longer than MaxLength or a label longer than
	// MaxLabelLength once converted to ASCII.
	ErrTooLong = errors.New("hostname: hostname too long")
	// ErrIPLiteral reports an IPv4 or IPv6 address (bracketed or not), or a
	// name whose last label is numeric and would therefore be read as an IPv4
	// address by URL parsers. Environments are routed by name, never by
	// address.
	ErrIPLiteral = errors.New("hostname: IP address instead of a hostname")
)

// hostnameError carries a message written for API users while still matching
// ErrInvalid and, when set, a more specific sentinel.
type hostnameError struct {
	msg  string
	kind error
}

// Error returns the message written for API users.
func (e *hostnameError) Error() string { return e.msg }

// Is makes errors.Is match ErrInvalid for every error and the specific
// sentinel the error was created with.
func (e *hostnameError) Is(target error) bool {
	return target == ErrInvalid || (e.kind != nil && target == e.kind)
}

func invalidf(format string, args ...any) error {
	return &hostnameError{msg: "hostname: " + fmt.Sprintf(format, args...), kind: ErrInvalid}
}

func tooLongf(format string, args ...any) error {
	return &hostnameError{msg: "hostname: " + fmt.Sprintf(format, args...), kind: ErrTooLong}
}

func ipLiteralf(format string, args ...any) error {
	return &hostnameError{msg: "hostname: " + fmt.Sprintf(format, args...), kind: ErrIPLiteral}
}

// profile converts internationalized names to ASCII.
//
// It is idna.Lookup's configuration (UTS #46 mapping for lookup, STD3 ASCII
// rules, ContextJ joiner checks, the RFC 5893 Bidi rule, non-transitional
// processing so "ß" stays "ß") with two differences, spelled out so that a
// change of idna.Lookup's defaults cannot silently change stored hostnames:
//
//   - CheckHyphens is off. It would reject every label with "--" in the
//     third and fourth position ("ab--cd"), which Generate produces from
//     valid slugs such as "ab-"; leading and trailing hyphens are rejected
//     by validate instead, for both ASCII labels and decoded xn-- labels.
//   - VerifyDNSLength is off, so that validate can report empty labels and
//     lengths with precise messages and ErrTooLong.
//
// Mapping rather than strict registration-style validation is deliberate: the
// write and lookup sides must agree, and browsers send the mapped form, so
// "ＥＸＡＭＰＬＥ.com" and "example.com" must be the same name.
var profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.CheckHyphens(false),
	idna.VerifyDNSLength(false),
	idna.RemoveLeadingDots(false),
)

// Normalize returns the canonical ASCII form of a hostname given on write,
// for example when an environment's hostname is created or updated, so that it
// compares equal to what FromHost derives from requests.
//
// It rejects whitespace and control characters anywhere, lowercases, converts
// internationalized labels to punycode ("Bücher.Example" becomes
// "xn--bcher-kva.example"), removes one trailing dot and validates the result:
// at most MaxLength characters, labels of 1 to MaxLabelLength letters, digits
// and hyphens that neither start nor end with a hyphen. Single-label names
// such as "intranet" are accepted. IP addresses and names ending in a numeric
// label fail with ErrIPLiteral, and a port ("a.example:8080") is invalid.
//
// The result is stable: Normalize of a result returns it unchanged.
func Normalize(s string) (string, error) {
	if err := precheck(s); err != nil {
		return "", err
	}
	lower := asciiLower(s)
	out, err := profile.ToASCII(lower)
	if err != nil {
		return "", diagnose(s)
	}
	out = strings.TrimSuffix(out, ".")
	if err := validate(s, out); err != nil {
		return "", err
	}
	// Convert the ASCII form once more and require it to be unchanged. The
	// first conversion decides whether the Bidi rule applies from the runes
	// before mapping, so "aℵ" (ALEF SYMBOL, left-to-right) passes although it
	// maps to the right-to-left "aא", whose punycode form then fails; storing
	// such a name would make it unreachable through FromHost.
	if again, err := profile.ToASCII(out); err != nil || again != out {
		return "", diagnoseASCII(s, out)
	}
	return out, nil
}

// FromHost derives the routing hostname from a request's Host header or
// :authority, which may carry a port, using the same normalization as
// Normalize so that lookups match stored names.
//
// It reports ok=false, and never an error, when the value is not a usable
// hostname: IP addresses (including bracketed IPv6 such as "[::1]:8080"), a
// non-numeric port, or anything Normalize rejects. Such a value is simply not
// a routing hint.
func FromHost(hostport string) (string, bool) {
	host := hostport
	if h, port, err := net.SplitHostPort(hostport); err == nil {
		if !isDigits(port) {
			return "", false
		}
		host = h
	}
	// Brackets are only for IP literals (RFC 3986 section 3.2.2); a bracketed
	// name such as "[a.example]:80" is malformed, not a hint.
	if strings.HasPrefix(host, "[") || strings.HasPrefix(hostport, "[") {
		return "", false
	}
	out, err := Normalize(host)
	if err != nil {
		return "", false
	}
	return out, true
}

// Generate returns the default hostname of an environment,
// orgSlug + "-" + envSlug + "." + rootDomain, so that every environment is
// reachable without configuring a custom name.
//
// The result is not validated and callers must pass it through Normalize
// before storing it: two slugs of up to 63 characters make a first label of
// up to 127 characters, longer than MaxLabelLength, and the whole name can
// exceed MaxLength. A slug ending in a hyphen also produces "--" in the label,
// and an organization slug of "xn-" produces a punycode prefix, which
// Normalize may reject.
func Generate(orgSlug, envSlug, rootDomain string) string {
	return orgSlug + "-" + envSlug + "." + rootDomain
}

// precheck rejects what must never reach IDNA processing: empty or oversized
// input, invalid UTF-8, whitespace and control characters (which IDNA mapping
// would partly drop or turn into other characters), IP literals and ports.
func precheck(s string) error {
	if s == "" {
		return invalidf("name is empty")
	}
	if len(s) > maxInputBytes {
		return tooLongf("name is longer than %d characters", MaxLength)
	}
	if !utf8.ValidString(s) {
		return invalidf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsSpace(r) {
			return invalidf("%q contains whitespace", s)
		}
		if unicode.IsControl(r) {
			return invalidf("%q contains a control character", s)
		}
	}
	if isIPLiteral(s) {
		return ipLiteralf("%q is an IP address, not a hostname", s)
	}
	if strings.Contains(s, ":") {
		if _, _, err := net.SplitHostPort(s); err == nil {
			return invalidf("%q includes a port; give the hostname without \":port\"", s)
		}
	}
	return nil
}

// isIPLiteral reports whether s is an IP address, bracketed or not, with or
// without a port.
func isIPLiteral(s string) bool {
	host := s
	if h, _, err := net.SplitHostPort(s); err == nil {
		host = h
	} else if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		host = s[1 : len(s)-1]
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// validate checks the ASCII form out of the input s; messages quote s or the
// offending label.
func validate(s, out string) error {
	if len(out) > MaxLength {
		return tooLongf("name is %d characters long in ASCII form; the limit is %d", len(out), MaxLength)
	}
	if _, err := netip.ParseAddr(out); err == nil {
		return ipLiteralf("%q is an IP address, not a hostname", s)
	}
	if err := emptyConverted(s, out); err != nil {
		return err
	}
	switch {
	case out == "":
		return invalidf("%q has no labels", s)
	case strings.HasPrefix(out, "."):
		return invalidf("%q starts with a dot", s)
	case strings.HasSuffix(out, "."):
		return invalidf("%q ends with more than one dot", s)
	case strings.Contains(out, ".."):
		return invalidf("%q has two dots in a row", s)
	}
	labels := strings.Split(out, ".")
	for _, label := range labels {
		if err := checkLabel(label); err != nil {
			return err
		}
	}
	if last := labels[len(labels)-1]; isNumericLabel(last) {
		return ipLiteralf("%q ends in the numeric label %q, so it would be read as an IPv4 address", s, last)
	}
	return nil
}

// checkLabel validates one non-empty ASCII label. For punycode labels it also
// checks the hyphen rule on the decoded label, since the profile does not.
func checkLabel(label string) error {
	display := label
	if strings.HasPrefix(label, "xn--") {
		if u, err := idna.Punycode.ToUnicode(label); err == nil {
			display = u
		}
	}
	if len(label) > MaxLabelLength {
		if display != label {
			return tooLongf("label %q is %d characters long in ASCII form (%q); the limit is %d", display, len(label), label, MaxLabelLength)
		}
		return tooLongf("label %q is %d characters long; the limit is %d", label, len(label), MaxLabelLength)
	}
	for i := 0; i < len(label); i++ {
		if !isLDH(label[i]) {
			return invalidf("label %q has a character other than letters, digits and hyphens", display)
		}
	}
	for _, l := range []string{label, display} {
		if strings.HasPrefix(l, "-") {
			return invalidf("label %q starts with a hyphen", display)
		}
		if strings.HasSuffix(l, "-") {
			return invalidf("label %q ends with a hyphen", display)
		}
	}
	return nil
}

// emptyConverted reports a label of s that is not empty but converts to an
// empty label, such as "xn--" or a label made only of characters that IDNA
// mapping drops; without it the message would blame a dot.
func emptyConverted(s, out string) error {
	in := inputLabels(s)
	conv := strings.Split(out, ".")
	if len(in) != len(conv) {
		return nil
	}
	for i, label := range in {
		if label == "" || conv[i] != "" {
			continue
		}
		if strings.EqualFold(label, "xn--") {
			return invalidf("label %q is not a valid punycode (xn--) label", label)
		}
		return invalidf("label %q has no characters that are allowed in hostnames", label)
	}
	return nil
}

// diagnose explains why the IDNA conversion of s failed, looking at one label
// at a time so that the message can name the offending label.
func diagnose(s string) error {
	labels := splitLabels(s)
	for _, label := range labels {
		if label == "" {
			continue
		}
		lower := asciiLower(label)
		if isASCII(label) && !strings.HasPrefix(lower, "xn--") {
			if err := checkLabel(lower); err != nil {
				return err
			}
			continue
		}
		if _, err := profile.ToASCII(lower); err != nil {
			if isASCII(label) {
				return invalidf("label %q is not a valid punycode (xn--) label", label)
			}
			return invalidf("label %q is not allowed by the rules for internationalized hostnames (IDNA)", label)
		}
	}
	// Every label is fine on its own; the only rule spanning labels is the
	// Bidi rule of RFC 5893.
	return invalidf("%q combines right-to-left text with labels that may not appear next to it (RFC 5893)", s)
}

// diagnoseASCII explains why the ASCII form out of s does not convert to
// itself, naming the label of s whose converted form fails when it can.
func diagnoseASCII(s, out string) error {
	in := inputLabels(s)
	conv := strings.Split(out, ".")
	for i, label := range conv {
		if _, err := profile.ToASCII(label); err == nil {
			continue
		}
		if len(in) == len(conv) {
			label = in[i]
		}
		return invalidf("label %q is not allowed by the rules for internationalized hostnames (IDNA)", label)
	}
	return invalidf("%q combines right-to-left text with labels that may not appear next to it (RFC 5893)", s)
}

// inputLabels returns the labels of the input s that correspond, one for one,
// to the labels of its converted form: s split at dots, without the empty
// label after the trailing dot Normalize removes.
func inputLabels(s string) []string {
	in := splitLabels(s)
	if len(in) > 1 && in[len(in)-1] == "" {
		in = in[:len(in)-1]
	}
	return in
}

// splitLabels splits s at the characters that IDNA mapping turns into a dot,
// keeping empty labels.
func splitLabels(s string) []string {
	var labels []string
	start := 0
	for i, r := range s {
		switch r {
		case '.', '\u3002', '\uff0e', '\uff61':
			labels = append(labels, s[start:i])
			start = i + utf8.RuneLen(r)
		}
	}
	return append(labels, s[start:])
}

// isNumericLabel reports whether label would make a URL parser treat the
// whole name as an IPv4 address (WHATWG URL "ends in a number"): all decimal
// digits, or "0x" followed by hexadecimal digits.
func isNumericLabel(label string) bool {
	if rest, ok := strings.CutPrefix(label, "0x"); ok {
		for i := 0; i < len(rest); i++ {
			c := rest[i]
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
		return true
	}
	return isDigits(label) && label != ""
}

func isLDH(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-'
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// asciiLower lowercases ASCII letters only; IDNA mapping handles the case of
// other letters, following UTS #46 rather than Go's case tables.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
