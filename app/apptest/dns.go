package apptest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNS is a real DNS server on loopback whose TXT and A records a test sets,
// for the hostname ownership checks (--dns-resolver).
type DNS struct {
	// Addr is its host:port.
	Addr string
	mu   sync.Mutex
	txt  map[string][]string
	a    map[string]net.IP

	delay             atomic.Int64 // nanoseconds every answer waits
	queries, in, most atomic.Int64
}

// SetDelay makes every answer wait d, so that queries overlap when their
// askers do.
func (d *DNS) SetDelay(delay time.Duration) { d.delay.Store(int64(delay)) }

// Stats returns how many queries were answered and the most that were in
// flight at once since the last ResetStats.
func (d *DNS) Stats() (queries, maxInFlight int64) { return d.queries.Load(), d.most.Load() }

// ResetStats starts counting again.
func (d *DNS) ResetStats() { d.queries.Store(0); d.most.Store(d.in.Load()) }

// StartDNS starts a DNS server on 127.0.0.1, stopped when tb ends.
func StartDNS(tb testing.TB) *DNS {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	d := &DNS{Addr: pc.LocalAddr().String(), txt: map[string][]string{}, a: map[string]net.IP{}}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve)}
	go func() { _ = srv.ActivateAndServe() }()
	tb.Cleanup(func() { _ = srv.Shutdown() })
	return d
}

// SetTXT makes name answer these TXT values (none: no record).
func (d *DNS) SetTXT(name string, values ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.txt[dns.Fqdn(strings.ToLower(name))] = values
}

// SetA makes name answer the IPv4 address ip.
func (d *DNS) SetA(name, ip string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.a[dns.Fqdn(strings.ToLower(name))] = net.ParseIP(ip)
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	// The query stops counting as in flight before its answer is written:
	// a client that sends its next query on receiving this answer must
	// never find this one still counted (a false overlap under load).
	n := d.in.Add(1)
	done := sync.OnceFunc(func() { d.in.Add(-1) })
	defer done()
	for {
		most := d.most.Load()
		if n <= most || d.most.CompareAndSwap(most, n) {
			break
		}
	}
	d.queries.Add(1)
	time.Sleep(time.Duration(d.delay.Load()))
	m := new(dns.Msg)
	m.SetReply(req)
	d.mu.Lock()
	found := false
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		switch q.Qtype {
		case dns.TypeTXT:
			for _, v := range d.txt[name] {
				found = true
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 1}, Txt: []string{v}})
			}
		case dns.TypeA:
			if ip, ok := d.a[name]; ok {
				found = true
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: ip})
			}
		}
	}
	d.mu.Unlock()
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	done()
	_ = w.WriteMsg(m)
}
