// Package server serves every mounted service on one port as Connect (JSON
// and binary), gRPC, gRPC-Web and REST, with reflection, health and CORS.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	"github.com/klauspost/compress/gzhttp"
	"github.com/klauspost/compress/gzip"
	"github.com/rs/cors"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/envplane/envplane/internal/apierr"
	"github.com/envplane/envplane/internal/auth"
	"github.com/envplane/envplane/internal/config"
	"github.com/envplane/envplane/internal/handoff"
	"github.com/envplane/envplane/internal/jsoncodec"
)

// Service is one protobuf service to mount. Mount builds its handler with the
// server's shared options (interceptors, size limits) and returns the path
// prefix it serves, as the generated New…Handler functions do.
type Service struct {
	Name  string // fully-qualified, e.g. envplane.environment.v1.EnvironmentService
	Mount func(opts ...connect.HandlerOption) (string, http.Handler)
	// Interceptors are the service's own, run inside the server's on every
	// call however it arrives (Mount gets them with the shared options).
	Interceptors []connect.Interceptor
	// Direct are the methods whose REST bindings are served without the
	// transcoder (see direct.go): the ones called all day.
	Direct []Method
}

// mount is s.Mount with the shared options and the service's interceptors.
func (s Service) mount(opts []connect.HandlerOption) (string, http.Handler) {
	if len(s.Interceptors) > 0 {
		opts = append(opts[:len(opts):len(opts)], connect.WithInterceptors(s.Interceptors...))
	}
	return s.Mount(opts...)
}

// Server is the one listening socket of the process.
type Server struct {
	http     *http.Server
	listen   string
	log      *slog.Logger
	shutdown time.Duration
	listener net.Listener
	done     chan struct{}
}

// New builds the HTTP handler tree: each Connect handler on its own path,
// the vanguard REST transcoder only under /api/ (behind it a Connect POST
// without Connect-Protocol-Version would be taken for REST), reflection and
// health beside them, all behind CORS and the request size limit.
//
// Every service handler requires authentication (authn); health and
// reflection are mounted without it.
func New(cfg config.Config, services []Service, authn *auth.Authenticator, ready Readiness, log *slog.Logger) (*Server, error) {
	interceptors, err := Interceptors(log, authn)
	if err != nil {
		return nil, err
	}
	opts := []connect.HandlerOption{
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(int(cfg.MaxRequestBytes)),
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithCompression("gzip", newGzipReader, newGzipWriter),
	}
	// Records are Structs, which protojson marshals slowly; jsoncodec writes
	// the same JSON a few times faster (and hands anything else to protojson).
	for _, c := range jsoncodec.ConnectCodecs() {
		opts = append(opts, connect.WithCodec(c))
	}
	mux := http.NewServeMux()
	names := make([]string, 0, len(services))
	for _, s := range services {
		path, h := s.mount(opts)
		mux.Handle(path, h)
		names = append(names, s.Name)
	}
	if len(services) > 0 {
		rest, err := restHandler(services, opts, interceptors, handoff.New())
		if err != nil {
			return nil, err
		}
		mux.Handle("/api/", rest)
	}
	// Health is listed too, so grpcurl can describe and call it by reflection.
	reflector := grpcreflect.NewStaticReflector(append(names, grpchealth.HealthV1ServiceName)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	health := healthChecker{services: append([]string{grpchealth.HealthV1ServiceName}, names...), ready: ready, log: log}
	mux.Handle(grpchealth.NewHandler(health))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { unknownPath(w) })
	mux.HandleFunc("GET /readyz", health.readyz)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})

	handler := http.MaxBytesHandler(mux, cfg.MaxRequestBytes)
	if len(cfg.CORSOrigins) > 0 {
		handler = cors.New(cors.Options{
			AllowedOrigins: cfg.CORSOrigins,
			AllowedMethods: append(connectcors.AllowedMethods(), http.MethodPut, http.MethodPatch, http.MethodDelete),
			AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization", "X-Environment-Id", HeaderRequestID),
			ExposedHeaders: append(connectcors.ExposedHeaders(), "X-Environment-Id", HeaderRequestID),
			MaxAge:         7200,
		}).Handler(handler)
	}

	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	return &Server{
		http: &http.Server{
			Handler:           handler,
			Protocols:         protocols,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		listen:   cfg.Listen,
		log:      log,
		shutdown: cfg.ShutdownTimeout,
		done:     make(chan struct{}),
	}, nil
}

// compressMinBytes is the smallest answer worth compressing: gzipping a
// 300-byte record cost 15% of the server's CPU in the create benchmark.
const compressMinBytes = 1024

// restHandler is the REST surface: the vanguard transcoder over every
// service, and beside it the direct routes of the services' Direct methods
// (see direct.go), which run inside interceptors, the server's own.
// Vanguard calls each service through a handler of its own, which takes
// messages through mailbox by reference rather than in protobuf that
// vanguard would marshal and the handler parse, and the other way for the
// answer (a third of the server's CPU for a page of records). Those handlers
// are on no mux: only vanguard reaches them, as handoff requires.
func restHandler(services []Service, opts []connect.HandlerOption, interceptors []connect.Interceptor, mailbox *handoff.Mailbox) (http.Handler, error) {
	vservices := make([]*vanguard.Service, 0, len(services))
	for _, s := range services {
		path, inner := s.mount(append(opts[:len(opts):len(opts)], connect.WithCodec(mailbox.Connect())))
		// No compression either: the answer crosses no network on its way
		// to vanguard, which compresses for the client (below).
		vservices = append(vservices, vanguard.NewService(path, uncompressedAnswers(inner), vanguard.WithTargetCodecs(handoff.Name)))
	}
	transcoder, err := vanguard.NewTranscoder(vservices,
		vanguard.WithCodec(jsoncodec.VanguardCodec),
		vanguard.WithCodec(func(vanguard.TypeResolver) vanguard.Codec { return mailbox.Vanguard() }))
	if err != nil {
		return nil, fmt.Errorf("rest transcoder: %w", err)
	}
	// Vanguard only mirrors the handler's compression, so REST answers are
	// compressed here, once, when they are worth it.
	compress, err := gzhttp.NewWrapper(gzhttp.MinSize(compressMinBytes), gzhttp.CompressionLevel(gzip.BestSpeed))
	if err != nil {
		return nil, fmt.Errorf("rest compression: %w", err)
	}
	// The transcoder's codec, over the types it resolves by default.
	codec := jsoncodec.VanguardCodec(protoregistry.GlobalTypes)
	fallback := markREST(clarifyErrors(transcoder))
	mux := http.NewServeMux()
	mux.Handle("/", fallback)
	for _, s := range services {
		routes, err := directRoutes(s.Direct, append(interceptors[:len(interceptors):len(interceptors)], s.Interceptors...), codec, fallback)
		if err != nil {
			return nil, err
		}
		for _, r := range routes {
			mux.Handle(r.pattern, r)
		}
	}
	return restBodies(compress(notModified(mux))), nil
}

// notModified answers a GET whose If-None-Match names the answer's ETag
// with 304 Not Modified and no body, whichever route made the answer.
func notModified(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		match := r.Header.Get("If-None-Match")
		if match == "" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&notModifiedWriter{ResponseWriter: w, match: match}, r)
	})
}

type notModifiedWriter struct {
	http.ResponseWriter
	match       string
	wrote, skip bool
}

func (w *notModifiedWriter) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if status == http.StatusOK && etagListed(w.match, w.Header().Get("ETag")) {
		w.skip = true
		h := w.Header()
		h.Del("Content-Length")
		h.Del("Content-Type")
		w.ResponseWriter.WriteHeader(http.StatusNotModified)
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *notModifiedWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.skip {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *notModifiedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// etagListed reports whether an If-None-Match value names etag: "*", or a
// list of entity tags compared weakly (W/ ignored), as RFC 9110 says.
func etagListed(list, etag string) bool {
	if etag == "" {
		return false
	}
	if strings.TrimSpace(list) == "*" {
		return true
	}
	etag = strings.TrimPrefix(etag, "W/")
	for tag := range strings.SplitSeq(list, ",") {
		if strings.TrimPrefix(strings.TrimSpace(tag), "W/") == etag {
			return true
		}
	}
	return false
}

// clarifyErrors gives vanguard's own refusals what every envplane error
// has, the right code and an ErrorInfo reason (MALFORMED_REQUEST). Vanguard
// answers a request it cannot turn into the method's message with 500 and
// code UNKNOWN (an unknown query parameter) or INVALID_ARGUMENT without
// details (a query value of the wrong type), both labelled
// application/proto. Handlers never answer UNKNOWN
// (the recover interceptor turns a stray error into INTERNAL) and always
// attach details, so either shape is vanguard refusing the request. Only
// error bodies are held back, to be read; other answers pass untouched.
func clarifyErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &clarifyingWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r)
		cw.finish()
	})
}

type clarifyingWriter struct {
	http.ResponseWriter
	headerDone bool
	status     int
	held       *bytes.Buffer // the body of an error
}

func (w *clarifyingWriter) WriteHeader(status int) {
	if w.headerDone {
		return
	}
	w.headerDone = true
	// The handler's own, which vanguard copies into the answer, where it
	// means nothing (a REST answer's compression is gzhttp's).
	w.Header().Del("Accept-Encoding")
	// Not by content type: vanguard labels its refusals with the handler's
	// (application/proto), though their bodies are JSON.
	if status >= http.StatusBadRequest {
		w.status, w.held = status, new(bytes.Buffer)
		return
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *clarifyingWriter) Write(b []byte) (int, error) {
	if !w.headerDone {
		w.WriteHeader(http.StatusOK)
	}
	if w.held != nil {
		return w.held.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

// Flush does nothing: every REST method is unary, so an answer goes out
// whole when the transcoder is done, in one write with a Content-Length,
// rather than flushed by vanguard (which made a gzipped answer a chunked
// body, with a sync flush of the compressor and a second write).
func (w *clarifyingWriter) Flush() {}

func (w *clarifyingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *clarifyingWriter) finish() {
	if w.held == nil {
		return
	}
	var status struct {
		Code    int               `json:"code"`
		Message string            `json:"message"`
		Details []json.RawMessage `json:"details"`
	}
	parsed := json.Unmarshal(w.held.Bytes(), &status) == nil
	if parsed && len(status.Details) == 0 &&
		(status.Code == int(connect.CodeUnknown) || status.Code == int(connect.CodeInvalidArgument)) {
		w.Header().Del("Content-Length")
		writeRESTError(w.ResponseWriter, http.StatusBadRequest, connect.CodeInvalidArgument, apierr.ReasonMalformedRequest,
			"the request does not fit the method: "+status.Message)
		return
	}
	// Vanguard's routing refusals are plain text: no route (404), or a
	// route for other HTTP methods (405, with Allow set).
	if !parsed && (w.status == http.StatusNotFound || w.status == http.StatusMethodNotAllowed) {
		w.Header().Del("Content-Length")
		if w.status == http.StatusNotFound {
			unknownPath(w.ResponseWriter)
			return
		}
		// Vanguard lists them from a map: in order, one answer is one text.
		allow := strings.Split(w.Header().Get("Allow"), ",")
		slices.Sort(allow)
		w.Header().Set("Allow", strings.Join(allow, ","))
		// UNIMPLEMENTED is the code of a 405 by design, not a stub: the
		// path serves methods, none with this HTTP method (grpc-gateway maps
		// 405 to it too); the reason says which, and Allow lists them.
		writeRESTError(w.ResponseWriter, http.StatusMethodNotAllowed, connect.CodeUnimplemented, apierr.ReasonMethodNotAllowed,
			"the path takes only "+strings.Join(allow, ", "))
		return
	}
	w.ResponseWriter.WriteHeader(w.status)
	_, _ = w.ResponseWriter.Write(w.held.Bytes())
}

// uncompressedAnswers keeps a handler from compressing its answer to
// vanguard, which would unzip it again to transcode it.
func uncompressedAnswers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Accept-Encoding")
		r.Header.Del("Connect-Accept-Encoding")
		r.Header.Del("Grpc-Accept-Encoding")
		h.ServeHTTP(w, r)
	})
}

// newGzipWriter compresses at gzip.BestSpeed (klauspost's gzip, faster than
// compress/gzip at every level): with compress/gzip, on a page of 20 records
// (6 KB of JSON), BestSpeed took a fifth of the default level's time (21 µs
// against 104) for an answer 11% larger (18% of the original size, not 16.5%).
func newGzipWriter() connect.Compressor {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // the level is valid
	return w
}

func newGzipReader() connect.Decompressor { return new(gzip.Reader) }

// Start listens and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.listen, err)
	}
	s.listener = ln
	s.log.Info("serving Connect, gRPC, gRPC-Web and REST", "addr", ln.Addr().String())
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("server stopped", "error", err)
		}
	}()
	return nil
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() string {
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

// Stop stops accepting calls and waits for in-flight ones to finish, for at
// most the configured shutdown timeout.
func (s *Server) Stop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.shutdown)
	defer cancel()
	s.log.Info("draining in-flight calls")
	err := s.http.Shutdown(ctx)
	if err != nil {
		_ = s.http.Close()
	}
	if s.listener != nil {
		<-s.done
	}
	return err
}

// restBodies prepares REST bodies for the transcoder. A call without a body
// loses its Content-Type, which describes nothing (hey sends text/html on
// every GET; the transcoder answered 415). A body sent without a JSON content
// type (curl -d sends application/x-www-form-urlencoded) is taken as JSON,
// the only body the REST surface speaks; a body labelled anything else, and
// a body that is not a JSON object, are refused here with a reason, because
// the transcoder would answer them in plain text or with an opaque 500.
// Content types are fixed up even without credentials; the refusals only
// happen on calls that carry them (without, the call must fail as
// UNAUTHENTICATED, whatever its body).
func restBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Body == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
			r.Header.Del("Content-Type")
			next.ServeHTTP(w, r)
			return
		}
		ct := r.Header.Get("Content-Type")
		anonymous := r.Header.Get("Authorization") == ""
		switch {
		case ct == "" || strings.HasPrefix(ct, "application/x-www-form-urlencoded"):
			ct = "application/json"
			r.Header.Set("Content-Type", ct)
		case !strings.HasPrefix(ct, "application/json") && !anonymous:
			writeRESTError(w, http.StatusUnsupportedMediaType, connect.CodeInvalidArgument, apierr.ReasonMalformedBody,
				"the request body must be JSON (Content-Type: application/json)")
			return
		}
		if !strings.HasPrefix(ct, "application/json") || anonymous {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeRESTError(w, http.StatusRequestEntityTooLarge, connect.CodeResourceExhausted, "REQUEST_TOO_LARGE", "the request body is too large")
			return
		}
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) > 0 && (trimmed[0] != '{' || !json.Valid(trimmed)) {
			writeRESTError(w, http.StatusBadRequest, connect.CodeInvalidArgument, apierr.ReasonMalformedBody, "the request body is not a JSON object")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// writeRESTError answers like the transcoder does: a google.rpc.Status with
// an ErrorInfo.
// unknownPath answers a request for a path that serves no method, in the
// JSON envelope of every REST error.
func unknownPath(w http.ResponseWriter) {
	writeRESTError(w, http.StatusNotFound, connect.CodeNotFound, apierr.ReasonUnknownPath,
		"no method is served at this path (REST lives under /api/v1/; the README lists the routes)")
}

func writeRESTError(w http.ResponseWriter, status int, code connect.Code, reason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"code":    int(code), // a number, as google.rpc.Status has it (connect.Code marshals to its name)
		"message": message,
		"details": []any{map[string]any{
			"@type":  "type.googleapis.com/google.rpc.ErrorInfo",
			"reason": reason,
			"domain": apierr.Domain,
		}},
	})
}
