package config

import (
	"io"
	"strings"
	"testing"
)

func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    int
		wantErr string
	}{
		{name: "default", want: 400},
		{name: "variable", env: map[string]string{"ENVPLANE_GC_PERCENT": "150"}, want: 150},
		{name: "flag wins", args: []string{"--gc-percent=250"}, env: map[string]string{"ENVPLANE_GC_PERCENT": "150"}, want: 250},
		{name: "zero", args: []string{"--gc-percent=0"}, wantErr: "--gc-percent: want a positive number"},
		{name: "not a number", args: []string{"--gc-percent=lots"}, wantErr: "--gc-percent: want a positive number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(append([]string{"--data-dir=" + t.TempDir()}, tc.args...), func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if cfg.GCPercent != tc.want {
				t.Errorf("GCPercent = %d, want %d", cfg.GCPercent, tc.want)
			}
		})
	}
}

func TestDebugListen(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"", true},
		{"127.0.0.1:6060", true},
		{"localhost:6060", true},
		{"[::1]:6060", true},
		{"0.0.0.0:6060", false},
		{":6060", false},
		{"10.0.0.1:6060", false},
		{"127.0.0.1", false},
	} {
		cfg, err := Parse([]string{"--data-dir=" + t.TempDir(), "--debug-listen=" + tc.value}, func(string) string { return "" }, io.Discard)
		if (err == nil) != tc.ok || (err == nil && cfg.DebugListen != tc.value) {
			t.Errorf("--debug-listen=%q: %+v, %v", tc.value, cfg.DebugListen, err)
		}
	}
}
