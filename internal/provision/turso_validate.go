package provision

import (
	"context"
	"time"

	"github.com/envplane/envplane/internal/driver/driverturso"
)

// ValidateTurso checks a bring-your-own libSQL database (libsql://, https://
// or http:// URL and its token) answers, within 10 seconds; it needs no
// Platform API configuration.
func ValidateTurso(ctx context.Context, databaseURL, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := driverturso.Open(ctx, databaseURL, token, driverturso.WithTimeout(10*time.Second))
	if err != nil {
		return &Error{Public: "could not reach the libSQL database", Err: err}
	}
	defer d.Close()
	if err := d.Ping(ctx); err != nil {
		return &Error{Public: "could not reach the libSQL database", Err: err}
	}
	return nil
}
