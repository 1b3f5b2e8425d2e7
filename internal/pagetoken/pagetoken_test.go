package pagetoken

import (
	"errors"
	"testing"
)

func TestRoundTripAndBinding(t *testing.T) {
	t.Parallel()
	tok := Encode("0193-last", "org-a")
	got, err := Decode(tok, "org-a")
	if err != nil || got != "0193-last" {
		t.Fatalf("Decode = %q, %v; want 0193-last", got, err)
	}
	if _, err := Decode(tok, "org-b"); !errors.Is(err, ErrInvalid) {
		t.Errorf("token of org-a accepted for org-b: %v", err)
	}
	if _, err := Decode(Encode("x", "ab", "c"), "a", "bc"); !errors.Is(err, ErrInvalid) {
		t.Errorf("query parts are not length-delimited: %v", err)
	}
	if got, err := Decode("", "org-a"); err != nil || got != "" {
		t.Errorf("empty token = %q, %v; want first page", got, err)
	}
	for _, bad := range []string{"!!!", "e30", "bm90LWpzb24"} {
		if _, err := Decode(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Decode(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestSize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   int32
		want int
	}{{0, DefaultSize}, {1, 1}, {1000, 1000}, {1001, MaxSize}, {1 << 30, MaxSize}} {
		if got := Size(c.in); got != c.want {
			t.Errorf("Size(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode("abc", "q"), "q")
	f.Add("", "q")
	f.Add("e30", "")
	f.Add("eyJhIjoiIiwicSI6IiJ9", "")
	f.Fuzz(func(t *testing.T, token, query string) {
		after, err := Decode(token, query)
		if err != nil {
			return
		}
		if token != "" && after == "" {
			t.Fatalf("non-empty token %q decoded to the first page", token)
		}
		if token != "" {
			again, err := Decode(Encode(after, query), query)
			if err != nil || again != after {
				t.Fatalf("re-encoding %q: got %q, %v", after, again, err)
			}
		}
	})
}
