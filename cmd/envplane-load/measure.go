package main

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// errStop ends a worker without counting a call (a scenario's own bound).
var errStop = errors.New("stop")

// result is what one scenario measured.
type result struct {
	ops       int
	errs      int
	firstErr  error
	elapsed   time.Duration
	latencies []time.Duration // of the successful calls
}

// measure runs call from concurrency goroutines until duration passes,
// maxOps calls have been started or a call returns errStop. Each call gets
// its sequence number i (0, 1, 2, …), which scenarios use to go round-robin.
//
// When the time is up no call starts, and the ones in flight finish: the
// calls carry no deadline (gRPC would send it along as grpc-timeout and the
// server could answer DEADLINE_EXCEEDED just before the client gives up).
// Calls still running grace after the end are cancelled and not counted.
// Workers carry the profiler labels side=client and scenario=label.
func measure(ctx context.Context, label string, duration time.Duration, concurrency, maxOps int, call func(ctx context.Context, i int64) error) result {
	const grace = 30 * time.Second
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu   sync.Mutex
		res  result
		next atomic.Int64
		done atomic.Bool
		wg   sync.WaitGroup
	)
	stopTimer := time.AfterFunc(duration, func() { done.Store(true) })
	defer stopTimer.Stop()
	cancelTimer := time.AfterFunc(duration+grace, cancel)
	defer cancelTimer.Stop()
	labels := pprof.Labels("side", "client", "scenario", label)
	start := time.Now()
	for range concurrency {
		wg.Add(1)
		go pprof.Do(ctx, labels, func(ctx context.Context) {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			errs := 0
			var firstErr error
			for !done.Load() && ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(maxOps) {
					break
				}
				t0 := time.Now()
				err := call(ctx, i)
				if errors.Is(err, errStop) {
					break
				}
				if err != nil {
					// A call cut short by an interrupt or the grace is no error.
					if ctx.Err() == nil {
						errs++
						if firstErr == nil {
							firstErr = err
						}
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			res.errs += errs
			if res.firstErr == nil {
				res.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(res.latencies)
	slices.Sort(res.latencies)
	return res
}

// merge is the result of a and b run one after the other.
func merge(a, b result) result {
	out := result{ops: a.ops + b.ops, errs: a.errs + b.errs, firstErr: a.firstErr, elapsed: a.elapsed + b.elapsed}
	if out.firstErr == nil {
		out.firstErr = b.firstErr
	}
	out.latencies = append(append(make([]time.Duration, 0, len(a.latencies)+len(b.latencies)), a.latencies...), b.latencies...)
	slices.Sort(out.latencies)
	return out
}

// quantile is the nearest-rank q-quantile of the sorted latencies.
func (r result) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[int(q*float64(len(r.latencies)-1)+0.5)]
}

// cost is how much less throughput many had than one, in percent ("-"
// when either has none).
func cost(one, many result) string {
	if one.ops == 0 || many.ops == 0 || one.elapsed <= 0 || many.elapsed <= 0 {
		return "-"
	}
	a := float64(one.ops) / one.elapsed.Seconds()
	b := float64(many.ops) / many.elapsed.Seconds()
	return fmt.Sprintf("%.0f%%", 100*(a-b)/a)
}

const rowFormat = "%-12s %-18s %5s %9s %8s %6s %9s %9s %9s\n"

func printHeader() {
	fmt.Printf(rowFormat, "protocol", "scenario", "envs", "ops/s", "ok", "err", "p50", "p99", "max")
}

// printRow prints one line of the table, and the first error under it.
func printRow(protocol, scenario, envs string, r result) {
	opsPerSec := "-"
	if r.elapsed > 0 {
		opsPerSec = fmt.Sprintf("%.0f", float64(r.ops)/r.elapsed.Seconds())
	}
	max := time.Duration(0)
	if n := len(r.latencies); n > 0 {
		max = r.latencies[n-1]
	}
	fmt.Printf(rowFormat, protocol, scenario, envs, opsPerSec, fmt.Sprint(r.ops), fmt.Sprint(r.errs),
		ms(r.quantile(0.50)), ms(r.quantile(0.99)), ms(max))
	if r.firstErr != nil {
		msg := r.firstErr.Error()
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		fmt.Printf("%12s first error: %s\n", "", strings.ReplaceAll(msg, "\n", " "))
	}
}

// ms formats a latency in milliseconds, with three significant-ish digits.
func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	m := float64(d) / float64(time.Millisecond)
	switch {
	case m < 10:
		return fmt.Sprintf("%.2fms", m)
	case m < 100:
		return fmt.Sprintf("%.1fms", m)
	default:
		return fmt.Sprintf("%.0fms", m)
	}
}
