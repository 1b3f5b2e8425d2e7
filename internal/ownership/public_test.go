package ownership

import (
	"net/netip"
	"testing"
)

// TestPublic: addresses of the public internet, IPv6 ones embedding a
// public IPv4 address included, are public; IPv6 addresses embedding a
// private one are as private as it is.
func TestPublic(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2606:4700::1111": true, "64:ff9b::808:808": true, "2002:808:808::1": true,
		"::ffff:8.8.8.8": true, "1.1.1.1": true,
		"64:ff9b::a9fe:a9fe": false, "2002:c0a8:1::": false, "::ffff:10.0.0.1": false, "fc00::1": false,
		"198.19.255.255": false, "255.255.255.255": false, "2001::1": false,
	} {
		if got := public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("public(%s) = %v, want %v", addr, got, want)
		}
	}
}
