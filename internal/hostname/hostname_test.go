package hostname

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var (
	label63 = strings.Repeat("a", 63)
	label64 = strings.Repeat("b", 64)
	// name253 is the longest valid name: 63+1+63+1+63+1+61 characters.
	name253 = label63 + "." + label63 + "." + label63 + "." + strings.Repeat("c", 61)
	// name254 exceeds MaxLength by one character.
	name254 = label63 + "." + label63 + "." + label63 + "." + strings.Repeat("c", 62)
)

// normalizeCases is shared by TestNormalize and the seed corpus of
// FuzzNormalize. A nil wantErr means success; otherwise the error must match
// wantErr and ErrInvalid.
var normalizeCases = []struct {
	name    string
	in      string
	want    string
	wantErr error
}{
	{name: "plain", in: "app.example.com", want: "app.example.com"},
	{name: "single label", in: "intranet", want: "intranet"},
	{name: "localhost", in: "localhost", want: "localhost"},
	{name: "uppercase", in: "App.EXAMPLE.com", want: "app.example.com"},
	{name: "digits and hyphens", in: "a-1.b2-c.example", want: "a-1.b2-c.example"},
	{name: "label starting with digit", in: "1password.example", want: "1password.example"},
	{name: "double hyphen inside label", in: "ab--cd.example", want: "ab--cd.example"},
	{name: "trailing dot", in: "app.example.com.", want: "app.example.com"},
	{name: "two trailing dots", in: "app.example.com..", wantErr: ErrInvalid},
	{name: "only a dot", in: ".", wantErr: ErrInvalid},
	{name: "leading dot", in: ".example.com", wantErr: ErrInvalid},
	{name: "empty label", in: "a..example", wantErr: ErrInvalid},
	{name: "empty", in: "", wantErr: ErrInvalid},
	{name: "idn german", in: "Bücher.Example", want: "xn--bcher-kva.example"},
	{name: "idn german uppercase", in: "BÜCHER.EXAMPLE", want: "xn--bcher-kva.example"},
	{name: "idn japanese", in: "例え.テスト", want: "xn--r8jz45g.xn--zckzah"},
	{name: "idn ideographic full stop", in: "例え。テスト", want: "xn--r8jz45g.xn--zckzah"},
	{name: "idn trailing ideographic full stop", in: "例え.テスト。", want: "xn--r8jz45g.xn--zckzah"},
	{name: "idn sharp s kept", in: "faß.de", want: "xn--fa-hia.de"},
	{name: "idn uppercase greek", in: "ΑΘΗΝΑ.gr", want: "xn--mxaard0a.gr"},
	{name: "idn fullwidth ascii", in: "ＥＸＡＭＰＬＥ.com", want: "example.com"},
	{name: "punycode given", in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
	{name: "punycode uppercase", in: "XN--BCHER-KVA.Example.", want: "xn--bcher-kva.example"},
	{name: "punycode invalid", in: "xn--a.example", wantErr: ErrInvalid},
	{name: "punycode of ascii", in: "xn--abc-.example", wantErr: ErrInvalid},
	{name: "punycode overflow", in: "xn--99999999999.example", wantErr: ErrInvalid},
	{name: "punycode empty", in: "xn--.example", wantErr: ErrInvalid},
	{name: "only ignored characters", in: "\u00ad.example", wantErr: ErrInvalid},
	{name: "soft hyphen dropped", in: "ex\u00adample.com", want: "example.com"},
	{name: "punycode label ending in hyphen", in: "xn----dha.example", wantErr: ErrInvalid},
	{name: "idn label ending in hyphen", in: "ü-.example", wantErr: ErrInvalid},
	{name: "idn disallowed rune", in: "⒈.example", wantErr: ErrInvalid},
	{name: "idn bidi across labels", in: "1a.ا", wantErr: ErrInvalid},
	{name: "idn rtl", in: "ا1.example", want: "xn--1-ymc.example"},
	{name: "idn hebrew", in: "שלום.example", want: "xn--9dbne9b.example"},
	{name: "idn symbol mapped to rtl", in: "ℵ.example", want: "xn--4db.example"},
	// ALEF SYMBOL is left-to-right but maps to the right-to-left ALEF, so the
	// Bidi rule only fails on the converted form.
	{name: "idn mapped to rtl inside ltr label", in: "aℵ.example", wantErr: ErrInvalid},
	{name: "idn mapped to rtl after digit label", in: "1a.ℵ", wantErr: ErrInvalid},
	{name: "idn zero width non-joiner", in: "a\u200cb.example", wantErr: ErrInvalid},
	{name: "idn leading combining mark", in: "\u0301a.example", wantErr: ErrInvalid},
	{name: "idn dotted capital i", in: "İstanbul.example", want: "xn--istanbul-o0e.example"},
	{name: "port", in: "a.example:8080", wantErr: ErrInvalid},
	{name: "empty port", in: "a.example:", wantErr: ErrInvalid},
	{name: "colons", in: "a:b:c", wantErr: ErrInvalid},
	{name: "max length", in: name253, want: name253},
	{name: "max length with trailing dot", in: name253 + ".", want: name253},
	{name: "too long", in: name254, wantErr: ErrTooLong},
	{name: "max label", in: label63 + ".example", want: label63 + ".example"},
	{name: "label too long", in: label64 + ".example", wantErr: ErrTooLong},
	{name: "idn label too long", in: strings.Repeat("ü", 60) + ".example", wantErr: ErrTooLong},
	{name: "huge input", in: strings.Repeat("a.", 5000), wantErr: ErrTooLong},
	{name: "underscore", in: "a_b.example", wantErr: ErrInvalid},
	{name: "space inside", in: "a b.example", wantErr: ErrInvalid},
	{name: "leading space", in: " a.example", wantErr: ErrInvalid},
	{name: "trailing newline", in: "a.example\n", wantErr: ErrInvalid},
	{name: "ideographic space", in: "a\u3000b.example", wantErr: ErrInvalid},
	{name: "control character", in: "a\x00b.example", wantErr: ErrInvalid},
	{name: "invalid utf8", in: "a\xffb.example", wantErr: ErrInvalid},
	{name: "slash", in: "a/b.example", wantErr: ErrInvalid},
	{name: "at sign", in: "user@a.example", wantErr: ErrInvalid},
	{name: "percent", in: "a%2eb.example", wantErr: ErrInvalid},
	{name: "leading hyphen", in: "-a.example", wantErr: ErrInvalid},
	{name: "trailing hyphen", in: "a-.example", wantErr: ErrInvalid},
	{name: "hyphen label", in: "-", wantErr: ErrInvalid},
	{name: "hyphen label inside", in: "a.-.example", wantErr: ErrInvalid},
	{name: "ipv4", in: "10.0.0.1", wantErr: ErrIPLiteral},
	{name: "ipv4 trailing dot", in: "10.0.0.1.", wantErr: ErrIPLiteral},
	{name: "ipv4 with port", in: "10.0.0.1:8080", wantErr: ErrIPLiteral},
	{name: "ipv4 fullwidth", in: "１０.０.０.１", wantErr: ErrIPLiteral},
	{name: "ipv4 leading zeros", in: "010.0.0.1", wantErr: ErrIPLiteral},
	{name: "numeric last label", in: "a.123", wantErr: ErrIPLiteral},
	{name: "numeric single label", in: "2130706433", wantErr: ErrIPLiteral},
	{name: "hex last label", in: "a.0x7f", wantErr: ErrIPLiteral},
	{name: "hex-like name label", in: "0x7f.example", want: "0x7f.example"},
	{name: "ipv6", in: "::1", wantErr: ErrIPLiteral},
	{name: "ipv6 bracketed", in: "[::1]", wantErr: ErrIPLiteral},
	{name: "ipv6 bracketed with port", in: "[2001:db8::1]:443", wantErr: ErrIPLiteral},
	{name: "ipv6 with zone", in: "fe80::1%eth0", wantErr: ErrIPLiteral},
	{name: "bracketed name", in: "[a.example]", wantErr: ErrInvalid},
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	for _, tc := range normalizeCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Normalize(tc.in)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Normalize(%q) error = %v, want %q", tc.in, err, tc.want)
				}
				if got != tc.want {
					t.Fatalf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Normalize(%q) = %q, want error matching %v", tc.in, got, tc.wantErr)
			}
			if got != "" {
				t.Errorf("Normalize(%q) returned %q with error %v, want empty string", tc.in, got, err)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Normalize(%q) error = %v, want it to match %v", tc.in, err, tc.wantErr)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Normalize(%q) error = %v, want it to match ErrInvalid", tc.in, err)
			}
			for _, other := range []error{ErrTooLong, ErrIPLiteral} {
				if other != tc.wantErr && errors.Is(err, other) {
					t.Errorf("Normalize(%q) error = %v, unexpectedly matches %v", tc.in, err, other)
				}
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "hostname: ") || strings.Contains(msg, "idna") {
				t.Errorf("Normalize(%q) error message %q, want a \"hostname: \" message without IDNA internals", tc.in, msg)
			}
		})
	}
}

func TestNormalizeMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
	}{
		{"a_b.example", `hostname: label "a_b" has a character other than letters, digits and hyphens`},
		{"", "hostname: name is empty"},
		{"a.example:8080", `hostname: "a.example:8080" includes a port; give the hostname without ":port"`},
		{"10.0.0.1", `hostname: "10.0.0.1" is an IP address, not a hostname`},
		{"-a.example", `hostname: label "-a" starts with a hyphen`},
		{"ü-.example", `hostname: label "ü-" ends with a hyphen`},
		{"a..example", `hostname: "a..example" has two dots in a row`},
		{"a.example..", `hostname: "a.example.." ends with more than one dot`},
		{label64 + ".example", `hostname: label "` + label64 + `" is 64 characters long; the limit is 63`},
		{name254, "hostname: name is 254 characters long in ASCII form; the limit is 253"},
		{"a b", `hostname: "a b" contains whitespace`},
		{"⒈.example", `hostname: label "⒈" is not allowed by the rules for internationalized hostnames (IDNA)`},
		{"xn--abc-.example", `hostname: label "xn--abc-" is not a valid punycode (xn--) label`},
		{"xn--.example", `hostname: label "xn--" is not a valid punycode (xn--) label`},
		{"aℵ.example", `hostname: label "aℵ" is not allowed by the rules for internationalized hostnames (IDNA)`},
		{"1a.ℵ", `hostname: "1a.ℵ" combines right-to-left text with labels that may not appear next to it (RFC 5893)`},
		{"a.123", `hostname: "a.123" ends in the numeric label "123", so it would be read as an IPv4 address`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			_, err := Normalize(tc.in)
			if err == nil {
				t.Fatalf("Normalize(%q) succeeded, want error %q", tc.in, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("Normalize(%q) error = %q, want %q", tc.in, err.Error(), tc.want)
			}
		})
	}
}

func TestFromHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		want   string
		wantOK bool
	}{
		{name: "plain", in: "app.example.com", want: "app.example.com", wantOK: true},
		{name: "uppercase with port", in: "App.Example.COM:8080", want: "app.example.com", wantOK: true},
		{name: "trailing dot with port", in: "app.example.com.:443", want: "app.example.com", wantOK: true},
		{name: "empty port", in: "app.example.com:", want: "app.example.com", wantOK: true},
		{name: "idn with port", in: "Bücher.example:8443", want: "xn--bcher-kva.example", wantOK: true},
		{name: "punycode with port", in: "xn--r8jz45g.xn--zckzah:80", want: "xn--r8jz45g.xn--zckzah", wantOK: true},
		{name: "single label with port", in: "localhost:3000", want: "localhost", wantOK: true},
		{name: "non-numeric port", in: "app.example.com:http", wantOK: false},
		{name: "two ports", in: "app.example.com:80:80", wantOK: false},
		{name: "ipv4", in: "10.0.0.1", wantOK: false},
		{name: "ipv4 with port", in: "10.0.0.1:8080", wantOK: false},
		{name: "ipv6", in: "::1", wantOK: false},
		{name: "ipv6 bracketed", in: "[::1]", wantOK: false},
		{name: "ipv6 with port", in: "[::1]:8080", wantOK: false},
		{name: "ipv6 full with port", in: "[2001:db8::1]:443", wantOK: false},
		{name: "bracketed name with port", in: "[app.example.com]:80", wantOK: false},
		{name: "bracketed name", in: "[app.example.com]", wantOK: false},
		{name: "empty", in: "", wantOK: false},
		{name: "port only", in: ":8080", wantOK: false},
		{name: "bad character", in: "a_b.example:80", wantOK: false},
		{name: "whitespace", in: "app.example.com ", wantOK: false},
		{name: "too long", in: name254 + ":80", wantOK: false},
		{name: "max length with port", in: name253 + ":80", want: name253, wantOK: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok := FromHost(tc.in)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("FromHost(%q) = (%q, %v), want (%q, %v)", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// TestNormalizeMatchesFromHost checks the property routing relies on: every
// accepted name, given on write, is found again from a Host header written in
// any of the usual ways.
func TestNormalizeMatchesFromHost(t *testing.T) {
	t.Parallel()
	for _, tc := range normalizeCases {
		if tc.wantErr != nil {
			continue
		}
		for _, host := range []string{tc.in, tc.in + ":443", strings.ToUpper(tc.want) + ".:8080"} {
			got, ok := FromHost(host)
			if !ok || got != tc.want {
				t.Errorf("FromHost(%q) = (%q, %v), want (%q, true)", host, got, ok, tc.want)
			}
		}
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		org, env, root string
		want           string
		wantErr        error
	}{
		{org: "acme", env: "prod", root: "envplane.dev", want: "acme-prod.envplane.dev"},
		{org: "a", env: "b", root: "example", want: "a-b.example"},
		{org: "ab-", env: "prod", root: "envplane.dev", want: "ab--prod.envplane.dev"},
		{org: label63, env: "prod", root: "envplane.dev", wantErr: ErrTooLong},
	}
	for _, tc := range tests {
		got := Generate(tc.org, tc.env, tc.root)
		norm, err := Normalize(got)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Normalize(Generate(%q, %q, %q)) error = %v, want %v", tc.org, tc.env, tc.root, err, tc.wantErr)
			}
			continue
		}
		if got != tc.want || err != nil || norm != tc.want {
			t.Errorf("Generate(%q, %q, %q) = %q, normalized (%q, %v), want %q", tc.org, tc.env, tc.root, got, norm, err, tc.want)
		}
	}
}

// FuzzNormalize checks the invariants stored hostnames depend on: the result
// is a fixed point, plain lowercase ASCII within the DNS limits, and is found
// again by FromHost.
func FuzzNormalize(f *testing.F) {
	for _, tc := range normalizeCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			if out != "" {
				t.Fatalf("Normalize(%q) = (%q, %v), want empty result with an error", in, out, err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Normalize(%q) error %v does not match ErrInvalid", in, err)
			}
			if _, ok := FromHost(in); ok && !strings.Contains(in, ":") {
				t.Fatalf("FromHost(%q) ok, but Normalize failed with %v", in, err)
			}
			return
		}
		if out == "" || len(out) > MaxLength {
			t.Fatalf("Normalize(%q) = %q, length %d out of range", in, out, len(out))
		}
		if strings.HasSuffix(out, ".") {
			t.Fatalf("Normalize(%q) = %q, has a trailing dot", in, out)
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			if c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') || !(isLDH(c) || c == '.') {
				t.Fatalf("Normalize(%q) = %q, has byte %q at %d", in, out, c, i)
			}
		}
		for _, label := range strings.Split(out, ".") {
			if label == "" || len(label) > MaxLabelLength || label[0] == '-' || label[len(label)-1] == '-' {
				t.Fatalf("Normalize(%q) = %q, has invalid label %q", in, out, label)
			}
		}
		again, err := Normalize(out)
		if err != nil || again != out {
			t.Fatalf("Normalize(Normalize(%q)) = (%q, %v), want (%q, nil)", in, again, err, out)
		}
		if got, ok := FromHost(out); !ok || got != out {
			t.Fatalf("FromHost(%q) = (%q, %v), want (%q, true)", out, got, ok, out)
		}
		if got, ok := FromHost(out + ":443"); !ok || got != out {
			t.Fatalf("FromHost(%q) = (%q, %v), want (%q, true)", out+":443", got, ok, out)
		}
	})
}
