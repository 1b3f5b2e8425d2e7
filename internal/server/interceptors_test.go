package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/envplane/envplane/internal/apierr"
)

// A handler's error that was not made for clients (Connect would answer it
// UNKNOWN, with its text) is answered INTERNAL and its cause logged; Connect
// errors and context errors pass as they are.
func TestRecoverAnswersStrayErrorsInternal(t *testing.T) {
	t.Parallel()
	notFound := apierr.New(connect.CodeNotFound, "OBJECT_NOT_DEFINED", "no such object")
	stray := fmt.Errorf("open /var/lib/envplane/envs/x.db: %w", errors.New("permission denied"))
	for _, c := range []struct {
		err    error
		want   error // nil: INTERNAL
		logged bool
	}{
		{err: notFound, want: notFound},
		{err: fmt.Errorf("wrapped: %w", notFound), want: notFound},
		{err: context.Canceled, want: context.Canceled},
		{err: fmt.Errorf("query: %w", context.DeadlineExceeded), want: context.DeadlineExceeded},
		{err: stray, logged: true},
	} {
		var logs bytes.Buffer
		i := recoverInterceptor{log: slog.New(slog.NewJSONHandler(&logs, nil))}
		call := i.WrapUnary(func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) { return nil, c.err })
		_, err := call(t.Context(), connect.NewRequest(&emptypb.Empty{}))
		switch {
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%v: answered %v", c.err, err)
		case c.want == nil && (connect.CodeOf(err) != connect.CodeInternal || strings.Contains(err.Error(), "/var/lib")):
			t.Errorf("%v: answered %v, want INTERNAL without the cause", c.err, err)
		}
		if got := strings.Contains(logs.String(), "permission denied"); got != c.logged {
			t.Errorf("%v: cause logged %v, want %v: %s", c.err, got, c.logged, logs.String())
		}
	}
}
