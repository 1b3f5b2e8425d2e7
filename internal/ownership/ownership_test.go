package ownership_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/envplane/envplane/internal/ownership"
)

const host = "shop.example"

// dnsServer is a real DNS server on loopback, over UDP and TCP on one port,
// serving records the test controls. Answers over UDP are truncated to the
// size the client announced, so large answers exercise the TCP fallback.
type dnsServer struct {
	addr string

	tcpQueries atomic.Int64

	mu       sync.RWMutex
	txt      map[string][][]string // fqdn → records → strings of one record
	a        map[string][]netip.Addr
	servfail map[string]bool
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	s := &dnsServer{
		txt:      map[string][][]string{},
		a:        map[string][]netip.Addr{},
		servfail: map[string]bool{},
	}
	pc, l := listenUDPAndTCP(t)
	s.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: s},
		{Listener: l, Handler: s},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return s
}

// listenUDPAndTCP opens a UDP socket and a TCP listener on the same loopback
// port, retrying when the TCP side of a free UDP port is taken.
func listenUDPAndTCP(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return nil, nil
}

func (s *dnsServer) setTXT(name string, records ...[]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txt[dns.Fqdn(name)] = records
}

func (s *dnsServer) setA(name string, addrs ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[dns.Fqdn(name)] = addrs
}

func (s *dnsServer) setServfail(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servfail[dns.Fqdn(name)] = true
}

func (s *dnsServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	hdr := func(rrtype uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: 60}
	}

	s.mu.RLock()
	txt, hasTXT := s.txt[name]
	addrs, hasA := s.a[name]
	servfail := s.servfail[name]
	s.mu.RUnlock()

	switch {
	case servfail:
		m.Rcode = dns.RcodeServerFailure
	case !hasTXT && !hasA:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeTXT:
		for _, strs := range txt {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: strs})
		}
	case q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA:
		for _, a := range addrs {
			switch {
			case a.Is4() && q.Qtype == dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: a.AsSlice()})
			case a.Is6() && q.Qtype == dns.TypeAAAA:
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
	}
	if _, udp := w.LocalAddr().(*net.UDPAddr); !udp {
		s.tcpQueries.Add(1)
	} else {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// closedAddr returns a loopback UDP address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// silentAddr returns a loopback UDP address that receives queries and never
// answers them.
func silentAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// serveBody serves body, TOKEN standing for the token, at the challenge path and 404 elsewhere.
func serveBody(body string) func(token string) http.Handler {
	return func(token string) http.Handler {
		mux := http.NewServeMux()
		mux.HandleFunc("GET "+ownership.HTTPPath(token), func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(strings.ReplaceAll(body, "TOKEN", token)))
		})
		return mux
	}
}

func TestChecks(t *testing.T) {
	t.Parallel()

	type check int
	const (
		checkDNS check = iota
		checkHTTP
		checkBoth
	)
	tests := []struct {
		name string
		// txt lists the TXT records at DNSName(host), TOKEN standing for the
		// token and HEAD and TAIL for its halves; nil publishes no name at
		// all (NXDOMAIN).
		txt [][]string
		// servfail makes the DNS server fail for DNSName(host).
		servfail bool
		// http builds the hostname's web server; nil serves 404 everywhere.
		http func(token string) http.Handler
		// dnsDown and httpDown point the Checker at a closed port instead.
		dnsDown, httpDown bool
		// noA publishes no address for the hostname.
		noA bool
		// dnsSilent points the Checker at a DNS server that never answers.
		dnsSilent bool
		check     check
		// wantTCP says the DNS answer must have come over TCP.
		wantTCP bool

		wantMethod string
		wantErr    error
		wantMsg    string // a part of the message, TOKEN standing for the token
	}{
		{
			name:  "TXT proves",
			txt:   [][]string{{"unrelated"}, {"TOKEN"}},
			check: checkDNS,
		},
		{
			name:  "TXT with spaces around the token proves",
			txt:   [][]string{{"  TOKEN "}},
			check: checkDNS,
		},
		{
			name:    "TXT with a wrong value",
			txt:     [][]string{{"0123456789abcdef0123456789abcdef"}},
			check:   checkDNS,
			wantErr: ownership.ErrNotProven,
			wantMsg: "no TXT record at _envplane-challenge.shop.example holds the token",
		},
		{
			name:    "TXT holding the token inside a longer value",
			txt:     [][]string{{"xTOKENx"}},
			check:   checkDNS,
			wantErr: ownership.ErrNotProven,
			wantMsg: "no TXT record at _envplane-challenge.shop.example holds the token",
		},
		{
			name:  "TXT split into several strings that join to the token",
			txt:   [][]string{{"HEAD", "TAIL"}},
			check: checkDNS,
		},
		{
			name:    "TXT strings of different records do not join",
			txt:     [][]string{{"HEAD"}, {"TAIL"}},
			check:   checkDNS,
			wantErr: ownership.ErrNotProven,
		},
		{
			name:    "TXT answer truncated over UDP is asked again over TCP",
			txt:     append(decoys(40), []string{"TOKEN"}),
			check:   checkDNS,
			wantTCP: true,
		},
		{
			name:    "no record (NXDOMAIN)",
			check:   checkDNS,
			wantErr: ownership.ErrNotProven,
			wantMsg: "no TXT record at _envplane-challenge.shop.example holds the token: the name has no TXT records",
		},
		{
			name:     "SERVFAIL",
			servfail: true,
			check:    checkDNS,
			wantErr:  ownership.ErrUnreachable,
			wantMsg:  "could not look up TXT records at _envplane-challenge.shop.example: the DNS server answered SERVFAIL",
		},
		{
			name:    "resolver down",
			dnsDown: true,
			check:   checkDNS,
			wantErr: ownership.ErrUnreachable,
			wantMsg: "could not look up TXT records at _envplane-challenge.shop.example",
		},
		{
			name:      "resolver silent",
			dnsSilent: true,
			check:     checkDNS,
			wantErr:   ownership.ErrUnreachable,
			wantMsg:   "timed out",
		},
		{
			name:  "HTTP proves",
			http:  serveBody("TOKEN\n"),
			check: checkHTTP,
		},
		{
			name:    "HTTP 404",
			check:   checkHTTP,
			wantErr: ownership.ErrNotProven,
			wantMsg: "http://shop.example/.well-known/envplane-challenge/TOKEN answered 404",
		},
		{
			name: "HTTP 500",
			http: func(string) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					http.Error(w, "TOKEN", http.StatusInternalServerError)
				})
			},
			check:   checkHTTP,
			wantErr: ownership.ErrNotProven,
			wantMsg: "answered 500",
		},
		{
			name:    "HTTP body wrong",
			http:    serveBody("not the token"),
			check:   checkHTTP,
			wantErr: ownership.ErrNotProven,
			wantMsg: "answered 200 but the body is not the token",
		},
		{
			name: "HTTP redirect not followed",
			http: func(token string) http.Handler {
				mux := http.NewServeMux()
				mux.HandleFunc("GET "+ownership.HTTPPath(token), func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, "/moved", http.StatusFound)
				})
				mux.HandleFunc("GET /moved", func(w http.ResponseWriter, _ *http.Request) {
					_, _ = w.Write([]byte(token))
				})
				return mux
			},
			check:   checkHTTP,
			wantErr: ownership.ErrNotProven,
			wantMsg: "answered a redirect",
		},
		{
			name:    "HTTP body larger than 4 KiB starting with the token",
			http:    serveBody("TOKEN" + strings.Repeat(" ", 5000)),
			check:   checkHTTP,
			wantErr: ownership.ErrNotProven,
			wantMsg: "larger than 4 KiB",
		},
		{
			name:     "HTTP server down",
			httpDown: true,
			check:    checkHTTP,
			wantErr:  ownership.ErrUnreachable,
			wantMsg:  "could not fetch http://shop.example/.well-known/envplane-challenge/TOKEN: connection refused",
		},
		{
			name:    "HTTP with the resolver down",
			dnsDown: true,
			http:    serveBody("TOKEN"),
			check:   checkHTTP,
			wantErr: ownership.ErrUnreachable,
			wantMsg: "could not fetch http://shop.example/.well-known/envplane-challenge/TOKEN: looking up the address of shop.example failed: connection refused",
		},
		{
			name:    "HTTP with no address for the hostname",
			noA:     true,
			http:    serveBody("TOKEN"),
			check:   checkHTTP,
			wantErr: ownership.ErrUnreachable,
			wantMsg: "shop.example has no A or AAAA record",
		},
		{
			name:       "Check prefers DNS when both would prove",
			txt:        [][]string{{"TOKEN"}},
			http:       serveBody("TOKEN"),
			check:      checkBoth,
			wantMethod: ownership.MethodDNS,
		},
		{
			name:       "Check falls back to HTTP when only HTTP proves",
			txt:        [][]string{{"stale"}},
			http:       serveBody("TOKEN"),
			check:      checkBoth,
			wantMethod: ownership.MethodHTTP,
		},
		{
			name:    "Check says what each method found",
			check:   checkBoth,
			wantErr: ownership.ErrNotProven,
			wantMsg: "no TXT record at _envplane-challenge.shop.example holds the token: the name has no TXT records; " +
				"http://shop.example/.well-known/envplane-challenge/TOKEN answered 404",
		},
		{
			name:     "Check is not proven when one method ran",
			txt:      [][]string{{"stale"}},
			httpDown: true,
			check:    checkBoth,
			wantErr:  ownership.ErrNotProven,
			wantMsg:  "holds the token; could not fetch",
		},
		{
			name:    "Check is unreachable when neither method ran",
			dnsDown: true,
			check:   checkBoth,
			wantErr: ownership.ErrUnreachable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			token := ownership.NewToken()

			dnsSrv := startDNS(t)
			if !tt.noA {
				dnsSrv.setA(host, netip.MustParseAddr("127.0.0.1"))
			}
			if tt.txt != nil {
				var records [][]string
				for _, r := range tt.txt {
					var strs []string
					for _, s := range r {
						s = strings.ReplaceAll(s, "TOKEN", token)
						s = strings.ReplaceAll(s, "HEAD", token[:16])
						s = strings.ReplaceAll(s, "TAIL", token[16:])
						strs = append(strs, s)
					}
					records = append(records, strs)
				}
				dnsSrv.setTXT(ownership.DNSName(host), records...)
			}
			if tt.servfail {
				dnsSrv.setServfail(ownership.DNSName(host))
			}

			handler := http.NotFoundHandler()
			if tt.http != nil {
				handler = tt.http(token)
			}
			web := httptest.NewServer(politeRequests(t, handler))
			t.Cleanup(web.Close)
			webURL, err := url.Parse(web.URL)
			if err != nil {
				t.Fatal(err)
			}
			webPort, err := strconv.Atoi(webURL.Port())
			if err != nil {
				t.Fatal(err)
			}
			if tt.httpDown {
				web.Close()
			}

			checker := &ownership.Checker{
				DNSResolver:  dnsSrv.addr,
				HTTPPort:     webPort,
				Timeout:      2 * time.Second,
				AllowPrivate: true, // the challenge server listens on loopback
			}
			switch {
			case tt.dnsDown:
				checker.DNSResolver = closedAddr(t)
			case tt.dnsSilent:
				checker.DNSResolver = silentAddr(t)
				checker.Timeout = 200 * time.Millisecond
			}

			var method string
			switch tt.check {
			case checkDNS:
				err = checker.CheckDNS(t.Context(), host, token)
			case checkHTTP:
				err = checker.CheckHTTP(t.Context(), host, token)
			case checkBoth:
				method, err = checker.Check(t.Context(), host, token)
			}

			if tcp := dnsSrv.tcpQueries.Load(); tt.wantTCP && tcp == 0 {
				t.Errorf("no query came over TCP")
			} else if !tt.wantTCP && tcp > 0 {
				t.Errorf("%d queries came over TCP, want none", tcp)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				if method != tt.wantMethod {
					t.Errorf("method = %q, want %q", method, tt.wantMethod)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want it to match %v", err, tt.wantErr)
			}
			other := ownership.ErrUnreachable
			if tt.wantErr == ownership.ErrUnreachable {
				other = ownership.ErrNotProven
			}
			if errors.Is(err, other) {
				t.Errorf("err = %v matches %v as well as %v", err, other, tt.wantErr)
			}
			if method != "" {
				t.Errorf("method = %q with an error", method)
			}
			msg := err.Error()
			if want := strings.ReplaceAll(tt.wantMsg, "TOKEN", token); !strings.Contains(msg, want) {
				t.Errorf("message %q\ndoes not contain %q", msg, want)
			}
			assertNoInfrastructure(t, msg, checker.DNSResolver, webPort)
		})
	}
}

// assertNoInfrastructure fails when msg names an address the organization
// must not learn: the resolver's, a resolved IP, or the port dialed.
func assertNoInfrastructure(t *testing.T, msg, resolver string, webPort int) {
	t.Helper()
	_, resolverPort, _ := net.SplitHostPort(resolver)
	for _, leak := range []string{"127.0.0.1", "::1", resolver, ":" + resolverPort, ":" + strconv.Itoa(webPort)} {
		if strings.Contains(msg, leak) {
			t.Errorf("message %q names %q", msg, leak)
		}
	}
}

// politeRequests fails the test when the HTTP check sends a request that
// does not name the hostname or carries cookies or credentials.
func politeRequests(t *testing.T, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, _, _ := net.SplitHostPort(r.Host); h != host {
			t.Errorf("Host = %q, want %s with the test server's port", r.Host, host)
		}
		for _, name := range []string{"Cookie", "Authorization", "Proxy-Authorization"} {
			if v := r.Header.Get(name); v != "" {
				t.Errorf("request carries %s: %q", name, v)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// decoys returns n TXT records long enough together to overflow a UDP
// answer, none of them a token.
func decoys(n int) [][]string {
	records := make([][]string, n)
	for i := range records {
		records[i] = []string{"decoy-" + strconv.Itoa(i) + "-" + strings.Repeat("x", 60)}
	}
	return records
}

// TestCheckHTTPRefusesPrivateAddresses: a hostname that resolves only to
// loopback, private or link-local addresses is not fetched (the server must
// not fetch from its own network for an organization), unless allowed.
func TestCheckHTTPRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	token := ownership.NewToken()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the check fetched %s from a private address", r.URL)
	}))
	t.Cleanup(web.Close)
	webURL, err := url.Parse(web.URL)
	if err != nil {
		t.Fatal(err)
	}
	webPort, err := strconv.Atoi(webURL.Port())
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "100.64.0.1", "::1", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0",
		"64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:0a00:0001::1", "2002:a9fe:a9fe::", "198.18.0.1", "240.0.0.1", "192.0.0.8", "2001:db8::1", "64:ff9b:1::1"} {
		dnsSrv := startDNS(t)
		dnsSrv.setA(host, netip.MustParseAddr(addr))
		checker := &ownership.Checker{DNSResolver: dnsSrv.addr, HTTPPort: webPort, Timeout: 2 * time.Second}
		err := checker.CheckHTTP(t.Context(), host, token)
		if !errors.Is(err, ownership.ErrUnreachable) || !strings.Contains(err.Error(), "private") {
			t.Errorf("%s: CheckHTTP = %v; want ErrUnreachable naming private addresses", addr, err)
		}
	}
}

func TestCheckRejectsMalformedInput(t *testing.T) {
	t.Parallel()
	// Nothing here may reach the network: the resolver is a closed port, so
	// ErrUnreachable would mean the check ran.
	checker := &ownership.Checker{DNSResolver: closedAddr(t), Timeout: time.Second}
	tests := []struct {
		name, hostname, token string
	}{
		{"empty token", host, ""},
		{"token with a slash", host, "abc/../x"},
		{"token with a query", host, "abc?x=1"},
		{"empty hostname", "", ownership.NewToken()},
		{"hostname with a path", "shop.example/x", ownership.NewToken()},
		{"IP literal", "127.0.0.1", ownership.NewToken()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checks := map[string]func(context.Context, string, string) error{
				"CheckDNS":  checker.CheckDNS,
				"CheckHTTP": checker.CheckHTTP,
				"Check": func(ctx context.Context, h, tok string) error {
					_, err := checker.Check(ctx, h, tok)
					return err
				},
			}
			for name, check := range checks {
				if err := check(t.Context(), tt.hostname, tt.token); !errors.Is(err, ownership.ErrNotProven) {
					t.Errorf("%s(%q, %q) = %v, want ErrNotProven", name, tt.hostname, tt.token, err)
				}
			}
		})
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	if got, want := ownership.DNSName("shop.example"), "_envplane-challenge.shop.example"; got != want {
		t.Errorf("DNSName = %q, want %q", got, want)
	}
	if got, want := ownership.HTTPPath("abc"), "/.well-known/envplane-challenge/abc"; got != want {
		t.Errorf("HTTPPath = %q, want %q", got, want)
	}
}

func TestNewToken(t *testing.T) {
	t.Parallel()
	format := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for range 100 {
		tok := ownership.NewToken()
		if !format.MatchString(tok) {
			t.Fatalf("NewToken() = %q, want 32 lowercase hex characters", tok)
		}
		if seen[tok] {
			t.Fatalf("NewToken() returned %q twice", tok)
		}
		seen[tok] = true
	}
}
