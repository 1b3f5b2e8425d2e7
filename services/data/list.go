package data

import (
	"context"
	"errors"
	"strings"

	"connectrpc.com/connect"

	datav1 "github.com/envplane/envplane/gen/envplane/data/v1"
	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/driver"
	"github.com/envplane/envplane/internal/pagetoken"
	"github.com/envplane/envplane/internal/query"
	"github.com/envplane/envplane/internal/schema"
)

// lister turns ListRecords requests into engine queries with keyset paging.
type lister struct {
	cursors *query.Cursors
}

func newLister(key []byte) (*lister, error) {
	c, err := query.NewCursors(key)
	if err != nil {
		return nil, err
	}
	return &lister{cursors: c}, nil
}

// ListRecords implements DataService.ListRecords.
func (s *Service) ListRecords(ctx context.Context, req *connect.Request[datav1.ListRecordsRequest]) (*connect.Response[datav1.ListRecordsResponse], error) {
	p, err := s.listRecords(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(p.proto()), nil
}

func (s *Service) listRecords(ctx context.Context, m *datav1.ListRecordsRequest) (*page, error) {
	p, err := s.listRecordsOnce(ctx, m)
	if changedUnder(err) {
		p, err = s.listRecordsOnce(ctx, m)
	}
	return p, settled(err)
}

func (s *Service) listRecordsOnce(ctx context.Context, m *datav1.ListRecordsRequest) (*page, error) {
	c, err := s.begin(ctx, m.GetObject(), auth.RoleViewer)
	if err != nil {
		return nil, err
	}
	defer c.lease.Release()
	mask, err := readMask(c.obj, m.GetReadMask())
	if err != nil {
		return nil, err
	}
	where, err := query.ParseFilter(c.obj, m.GetFilter())
	if err != nil {
		return nil, queryError("filter", err)
	}
	order, err := query.ParseOrder(c.obj, m.GetOrderBy())
	if err != nil {
		return nil, queryError("order_by", err)
	}
	fp := query.NewFingerprint(c.env, c.obj, where, order)
	after, err := s.lists.cursors.Decode(fp, m.GetPageToken(), c.obj, order)
	if err != nil {
		return nil, queryError("page_token", err)
	}
	size := pagetoken.Size(m.GetPageSize())
	recs, err := c.lease.Driver.Query(ctx, c.obj, driver.Query{Filter: where, Order: order, After: after, Limit: size + 1})
	if err != nil {
		return nil, s.writeError(ctx, c.obj, err)
	}
	p := &page{obj: c.obj, mask: mask}
	if len(recs) > size {
		recs, p.next, err = s.lists.nextPage(fp, recs[:size], order)
		if errors.Is(err, query.ErrCursorTooLong) {
			// Every record of the page holds order_by values longer than a
			// page token carries (long text): the next page cannot be
			// named. A limitation of keyset tokens, not a server fault.
			msg := "order_by: the records of the page have values of the order_by fields too long for a page token; order by shorter fields"
			return nil, apierr.InvalidArgument(query.ReasonInvalidOrderBy, msg,
				apierr.FieldViolation{Field: "order_by", Description: "values too long to page on"})
		}
		if err != nil {
			return nil, s.internal(ctx, err)
		}
	}
	p.recs = recs
	if m.GetShowTotalSize() {
		if p.total, err = c.lease.Driver.Count(ctx, c.obj, where); err != nil {
			return nil, s.writeError(ctx, c.obj, err)
		}
	}
	return p, nil
}

// nextPage returns the page to answer of the full page recs, and the token
// of the page after it. The token carries the order keys of the page's last
// record; when they are too long for a token (long text), the page ends
// earlier, on the last record whose keys fit: a page may hold fewer records
// than page_size even when more follow (AIP-158 allows it). When no record's
// keys fit, the error is query.ErrCursorTooLong.
func (l *lister) nextPage(fp query.Fingerprint, recs []driver.Record, order []driver.OrderBy) ([]driver.Record, string, error) {
	for last := len(recs) - 1; last >= 0; last-- {
		token, err := l.cursors.Encode(fp, position(recs[last], order))
		if errors.Is(err, query.ErrCursorTooLong) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		return recs[:last+1], token, nil
	}
	return nil, "", query.ErrCursorTooLong
}

// position is the keyset position of rec: its order keys, then its id.
func position(rec driver.Record, order []driver.OrderBy) []any {
	out := make([]any, 0, len(order)+1)
	for _, o := range order {
		out = append(out, rec[o.Field])
	}
	return append(out, rec[schema.FieldID])
}

// queryError maps a filter, order or cursor problem to INVALID_ARGUMENT with
// its own reason.
func queryError(field string, err error) error {
	var qe *query.Error
	if errors.As(err, &qe) {
		return apierr.InvalidArgument(qe.Reason, field+": "+qe.Message, apierr.FieldViolation{Field: field, Description: qe.Message})
	}
	return apierr.InvalidArgument("INVALID_"+strings.ToUpper(field), field+" is invalid", apierr.FieldViolation{Field: field, Description: "invalid"})
}
