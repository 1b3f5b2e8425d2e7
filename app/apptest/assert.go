package apptest

import (
	"slices"
	"testing"

	"connectrpc.com/connect"

	"github.com/envplane/envplane/internal/apierr"
)

// WantError fails tb unless err carries code and the ErrorInfo reason (an
// empty reason asks for none to be checked) and returns whether it did. It
// looks at codes and reasons only, never at message text.
func WantError(tb testing.TB, err error, code connect.Code, reason string) bool {
	tb.Helper()
	if err == nil {
		tb.Errorf("got success, want %s %s", code, reason)
		return false
	}
	ok := true
	if got := connect.CodeOf(err); got != code {
		tb.Errorf("code = %s, want %s (error: %v)", got, code, err)
		ok = false
	}
	if reason != "" {
		if got := apierr.Reason(err); got != reason {
			tb.Errorf("reason = %q, want %q (error: %v)", got, reason, err)
			ok = false
		}
	}
	return ok
}

// WantFieldViolation fails tb unless err carries a google.rpc.BadRequest
// naming field.
func WantFieldViolation(tb testing.TB, err error, field string) {
	tb.Helper()
	br := apierr.BadRequest(err)
	if br == nil {
		tb.Errorf("no BadRequest detail; want a field violation on %q (error: %v)", field, err)
		return
	}
	var fields []string
	for _, v := range br.GetFieldViolations() {
		fields = append(fields, v.GetField())
	}
	if !slices.Contains(fields, field) {
		tb.Errorf("BadRequest names fields %q, want %q among them", fields, field)
	}
}
