// Package ownership proves that whoever asks to bind a custom hostname to an
// environment controls that hostname, before any request for it is routed.
//
// An organization proves control in one of two ways, as ACME does for
// certificates: it publishes the challenge token in a DNS TXT record at
// DNSName(hostname), or it serves the token at HTTPPath(token) on the
// hostname itself over plain HTTP. A Checker runs either check and says what
// it found in words the organization can act on.
//
// Every message a check returns is meant to be shown to that organization, so
// none names the DNS server asked or an address the hostname resolved to:
// those describe our infrastructure, not the organization's records.
package ownership

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/envplane/envplane/internal/hostname"
)

// Methods a proof can take. Check returns the one that succeeded so the
// caller can record how the hostname was proven.
const (
	MethodDNS  = "dns"
	MethodHTTP = "http"
)

// Defaults of the zero Checker.
const (
	defaultHTTPPort = 80
	defaultTimeout  = 5 * time.Second
)

// maxBody is the most of a challenge response the HTTP check reads. A token
// is 32 characters; anything near this size is not a challenge file, and
// reading more would let a hostile server make us buffer without bound.
const maxBody = 4 << 10

// ErrNotProven reports that a check ran and found no proof: the record is
// missing or holds another value, or the challenge file is absent, moved or
// wrong. Asking again only helps once the organization has changed something.
var ErrNotProven = errors.New("ownership not proven")

// ErrUnreachable reports that a check could not run: the DNS server or the
// hostname's web server did not answer, or answered with a failure. It says
// nothing about ownership, so asking again later may succeed unchanged.
var ErrUnreachable = errors.New("ownership check could not run")

// DNSName is where the TXT record for hostname goes. A dedicated label keeps
// the challenge out of the way of the hostname's own TXT records (SPF, site
// verifications) and lets a CNAME on the hostname coexist with it.
func DNSName(hostname string) string {
	return "_envplane-challenge." + hostname
}

// HTTPPath is the path of the challenge file for token. It lives under
// /.well-known/ (RFC 8615) so it cannot collide with the site's own pages.
func HTTPPath(token string) string {
	return "/.well-known/envplane-challenge/" + token
}

// NewToken returns a fresh challenge token: 32 lowercase hex characters from
// crypto/rand. 128 random bits mean nobody can publish a token before it is
// issued, and hex survives DNS, URLs and copy-paste unchanged.
func NewToken() string {
	var b [16]byte
	// crypto/rand.Read never returns an error; it aborts the program when the
	// system cannot supply randomness.
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Checker runs ownership checks. Its zero value asks the system resolver,
// connects to port 80 and gives each check 5 seconds. A Checker holds no
// state between checks and is safe for concurrent use.
type Checker struct {
	// DNSResolver is "host:port" of the DNS server to ask, over UDP and then
	// TCP when the answer is truncated. Empty means the system resolver
	// (net.DefaultResolver). The HTTP check resolves the hostname through the
	// same server, so both checks see the same view of DNS.
	DNSResolver string
	// HTTPPort is the port the HTTP check connects to; 0 means 80. Tests set
	// it to a loopback server's port.
	HTTPPort int
	// Timeout bounds one check: a DNS check, or an HTTP check including its
	// address lookup. Check runs up to two. 0 means 5 seconds.
	Timeout time.Duration
	// AllowPrivate lets the HTTP check connect to loopback, private,
	// link-local and other non-public addresses. Off, a hostname that
	// resolves only to such addresses is unreachable: an organization must
	// not make the server fetch from its own network. Tests, whose
	// challenge servers listen on loopback, turn it on.
	AllowPrivate bool
}

// proofError is what every check returns: a message fit for the organization
// that owns the hostname, matching ErrNotProven or ErrUnreachable through
// errors.Is. The sentinel is not part of the message so that Check can join
// the findings of both methods into one readable sentence.
type proofError struct {
	kind error
	msg  string
}

func (e *proofError) Error() string { return e.msg }
func (e *proofError) Unwrap() error { return e.kind }

func notProven(format string, args ...any) error {
	return &proofError{kind: ErrNotProven, msg: fmt.Sprintf(format, args...)}
}

func unreachable(format string, args ...any) error {
	return &proofError{kind: ErrUnreachable, msg: fmt.Sprintf(format, args...)}
}

// Check tries DNS first, then HTTP, and returns the method that proved
// ownership, so an organization may use whichever its setup allows.
//
// When neither proves it, the error matches ErrNotProven if at least one
// check ran, and ErrUnreachable only if neither could run; its message says
// what each method found, for example
//
//	no TXT record at _envplane-challenge.shop.example holds the token; http://shop.example/.well-known/envplane-challenge/<token> answered 404
func (c *Checker) Check(ctx context.Context, hostname, token string) (method string, err error) {
	dnsErr := c.CheckDNS(ctx, hostname, token)
	if dnsErr == nil {
		return MethodDNS, nil
	}
	httpErr := c.CheckHTTP(ctx, hostname, token)
	if httpErr == nil {
		return MethodHTTP, nil
	}
	if dnsErr.Error() == httpErr.Error() {
		// Both rejected the input the same way; say it once.
		return "", dnsErr
	}
	kind := ErrUnreachable
	if errors.Is(dnsErr, ErrNotProven) || errors.Is(httpErr, ErrNotProven) {
		kind = ErrNotProven
	}
	return "", &proofError{kind: kind, msg: dnsErr.Error() + "; " + httpErr.Error()}
}

// CheckDNS reports whether a TXT record at DNSName(hostname) holds token. The
// strings of one record are joined before comparing, because providers split
// long values and some split short ones too.
func (c *Checker) CheckDNS(ctx context.Context, hostname, token string) error {
	host, err := checkInput(hostname, token)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()

	name := DNSName(host)
	values, err := c.lookupTXT(ctx, name)
	switch {
	case errors.Is(err, errNoRecords):
		return notProven("no TXT record at %s holds the token: the name has no TXT records", name)
	case err != nil:
		return unreachable("could not look up TXT records at %s: %s", name, describe(err))
	}
	for _, v := range values {
		if strings.TrimSpace(v) == token {
			return nil
		}
	}
	return notProven("no TXT record at %s holds the token", name)
}

// CheckHTTP reports whether http://hostname/.well-known/envplane-challenge/token
// answers 200 with the token as its body. It connects to the addresses the
// hostname resolves to through the Checker's resolver, follows no redirect
// (the proof must come from the hostname itself), uses no proxy and sends no
// cookies or credentials.
func (c *Checker) CheckHTTP(ctx context.Context, hostname, token string) error {
	host, err := checkInput(hostname, token)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()

	// shown is the URL as the organization would type it; the port we connect
	// to is an implementation detail (and only differs from 80 in tests).
	shown := "http://" + host + HTTPPath(token)
	target := shown
	if port := c.httpPort(); port != defaultHTTPPort {
		target = "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + HTTPPath(token)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return notProven("%s is not a valid URL", shown)
	}
	req.Header.Set("User-Agent", "envplane-ownership-check")

	transport := &http.Transport{
		Proxy:              nil,
		DialContext:        c.dialHost,
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}

	resp, err := client.Do(req)
	var lookupErr *addrLookupError
	switch {
	case errors.As(err, &lookupErr) && errors.Is(lookupErr.err, errNoRecords):
		return unreachable("could not fetch %s: %s has no A or AAAA record", shown, host)
	case errors.As(err, &lookupErr):
		return unreachable("could not fetch %s: looking up the address of %s failed: %s", shown, host, describe(lookupErr.err))
	case err != nil:
		return unreachable("could not fetch %s: %s", shown, describe(err))
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return notProven("%s answered a redirect (%d); the challenge file must be served by the hostname itself", shown, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return notProven("%s answered %d", shown, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return unreachable("could not read the answer of %s: %s", shown, describe(err))
	}
	if len(body) > maxBody {
		return notProven("%s answered 200 with a body larger than 4 KiB; it must hold only the token", shown)
	}
	if strings.TrimSpace(string(body)) != token {
		return notProven("%s answered 200 but the body is not the token", shown)
	}
	return nil
}

// checkInput normalizes hostname and rejects a token that could not have come
// from NewToken. An empty token would be "proven" by an empty TXT record, and
// one holding '/' or '?' would change the URL being fetched.
func checkInput(name, token string) (string, error) {
	host, err := hostname.Normalize(name)
	if err != nil {
		return "", notProven("%q is not a valid hostname", name)
	}
	if token == "" || len(token) > 128 || strings.TrimLeft(token, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_") != "" {
		return "", notProven("the challenge token is malformed")
	}
	return host, nil
}

func (c *Checker) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return defaultTimeout
}

func (c *Checker) httpPort() int {
	if c.HTTPPort > 0 {
		return c.HTTPPort
	}
	return defaultHTTPPort
}

// errNoRecords reports a lookup that found nothing: the name does not exist
// or has no records of the asked type. It is a finding, not a failure.
var errNoRecords = errors.New("no records")

// errRcode reports a DNS server that answered with a failure code.
type errRcode int

func (e errRcode) Error() string {
	return "the DNS server answered " + dns.RcodeToString[int(e)]
}

// lookupTXT returns the value of each TXT record at name, the strings of one
// record joined.
func (c *Checker) lookupTXT(ctx context.Context, name string) ([]string, error) {
	if c.DNSResolver == "" {
		values, err := net.DefaultResolver.LookupTXT(ctx, name)
		if err != nil {
			return nil, systemError(err)
		}
		if len(values) == 0 {
			return nil, errNoRecords
		}
		// The standard library already joins the strings of one record.
		return values, nil
	}
	answer, err := c.exchange(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var values []string
	for _, rr := range answer {
		if txt, ok := rr.(*dns.TXT); ok {
			values = append(values, strings.Join(txt.Txt, ""))
		}
	}
	if len(values) == 0 {
		return nil, errNoRecords
	}
	return values, nil
}

// lookupAddrs returns the IPv4 and IPv6 addresses of host, through the same
// resolver as the DNS check.
func (c *Checker) lookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if c.DNSResolver == "" {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, systemError(err)
		}
		if len(addrs) == 0 {
			return nil, errNoRecords
		}
		return addrs, nil
	}
	var addrs []netip.Addr
	var firstErr error
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		answer, err := c.exchange(ctx, host, qtype)
		if err != nil {
			if !errors.Is(err, errNoRecords) && firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, rr := range answer {
			var ip net.IP
			switch rr := rr.(type) {
			case *dns.A:
				ip = rr.A
			case *dns.AAAA:
				ip = rr.AAAA
			}
			if addr, ok := netip.AddrFromSlice(ip); ok {
				addrs = append(addrs, addr.Unmap())
			}
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, errNoRecords
}

// exchange asks c.DNSResolver for records of qtype at name and returns the
// answer section. It asks over UDP and repeats the question over TCP when the
// answer comes back truncated, as a stub resolver must (RFC 7766).
func (c *Checker) exchange(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	q.SetEdns0(1232, false)

	client := &dns.Client{Net: "udp", Timeout: c.timeout()}
	resp, _, err := client.ExchangeContext(ctx, q, c.DNSResolver)
	if resp != nil && resp.Truncated {
		client.Net = "tcp"
		resp, _, err = client.ExchangeContext(ctx, q, c.DNSResolver)
	}
	if err != nil {
		return nil, err
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, errNoRecords
	default:
		return nil, errRcode(resp.Rcode)
	}
	if len(resp.Answer) == 0 {
		return nil, errNoRecords
	}
	return resp.Answer, nil
}

// systemError maps an error of net.DefaultResolver onto the package's own:
// a name without records is a finding, anything else a failure to ask.
func systemError(err error) error {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return errNoRecords
	}
	return err
}

// addrLookupError tells a failure to resolve the hostname apart from a
// failure to connect to it, which the organization fixes in different places.
type addrLookupError struct{ err error }

func (e *addrLookupError) Error() string { return "address lookup: " + e.err.Error() }
func (e *addrLookupError) Unwrap() error { return e.err }

// dialHost connects to the hostname of an HTTP check. It resolves the name
// itself, so the HTTP check goes where the Checker's resolver says the
// hostname lives, and tries each address in turn.
func (c *Checker) dialHost(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs, err := c.lookupAddrs(ctx, host)
	if err != nil {
		return nil, &addrLookupError{err: err}
	}
	if !c.AllowPrivate {
		addrs = slices.DeleteFunc(slices.Clone(addrs), func(ip netip.Addr) bool { return !public(ip) })
		if len(addrs) == 0 {
			return nil, errPrivateAddress
		}
	}
	var d net.Dialer
	var firstErr error
	for _, ip := range addrs {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// errPrivateAddress is the HTTP check's refusal of a hostname that
// resolves only to addresses of a private network.
var errPrivateAddress = errors.New("it resolves only to private, loopback or link-local addresses, which are not checked")

// nonPublic are ranges no public host has beyond what netip.Addr's
// predicates know: shared address space (carrier NAT), "this network",
// IETF protocol assignments, benchmarking, documentation, reserved and
// broadcast; IPv6 discard-only, documentation, Teredo and local-use NAT64.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("192.0.0.0/24"), netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("100::/64"), netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2001::/32"), netip.MustParsePrefix("64:ff9b:1::/48"),
}

// Prefixes of IPv6 addresses that carry an IPv4 address a gateway reaches
// for them: NAT64's well-known prefix (the IPv4 address in the last 32
// bits) and 6to4 (in the 32 bits after the prefix).
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// public reports whether ip is an address of the public internet. An IPv6
// address that embeds an IPv4 one (NAT64, 6to4) is as public as that one:
// on a network with a NAT64 gateway, 64:ff9b::a9fe:a9fe is 169.254.169.254.
func public(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			return public(netip.AddrFrom4([4]byte(b[12:16])))
		case sixTo4.Contains(ip):
			return public(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// describe turns a failure into words for the organization. It never returns
// err's own text, which names the DNS server or the addresses dialed.
func describe(err error) string {
	var rcode errRcode
	var netErr net.Error
	switch {
	case errors.As(err, &rcode):
		return rcode.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "the check was canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, errPrivateAddress):
		return errPrivateAddress.Error()
	default:
		return "the connection failed"
	}
}
