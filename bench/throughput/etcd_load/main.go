// Command etcd_load is the etcd load generator of `deno task bench:throughput`:
// closed-loop clients driving etcd through its native gRPC API with etcd's own
// Go client (go.etcd.io/etcd/clientv3), so that etcd is measured on the path
// its users and its own benchmark tool (tools/benchmark) take, not through the
// JSON gateway.
//
// Like etcd's benchmark tool, it opens -conns client connections, each to one
// member in turn (connection i to endpoint i mod members), and shares them
// among -clients goroutines (client i uses connection i mod conns); each
// client has one request outstanding at a time. Workloads match the wrk
// scripts of bench/throughput/lua.ts: keys are a three-byte prefix and six
// decimal digits drawn uniformly from [0, -keys), values 64 bytes naming the
// workload and the client (`<tag>-t<client>-` padded with dots), reads a
// share of -read-percent (linearizable Gets, as the gateway's default range).
//
// After -duration seconds every request still in flight is cancelled and not
// counted, like wrk. It prints one line, ETCD_LOAD_RESULT followed by JSON in
// the shape of the wrk scripts' result line (requests, duration_us, errors,
// latency percentiles in microseconds, requests sent per kind, CPU time), plus
// the client and connection counts.
//
// Built offline by bench/throughput/etcd_load.ts with Debian's golang-go and
// golang-etcd-server-dev: GO111MODULE=off GOPATH=/usr/share/gocode go build.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/bits"
	"math/rand"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// resultMarker starts the one line of results (RESULT_MARKER in etcd_load.ts).
const resultMarker = "ETCD_LOAD_RESULT"

// valueBytes is the size of every value written (VALUE_BYTES in options.ts).
const valueBytes = 64

// Latencies go into a log-linear histogram, so memory stays bounded however
// long the run: below 2^subBits microseconds one bucket per microsecond,
// above it 2^subBits buckets per power of two (under 1 % error).
const (
	subBits    = 7
	subBuckets = 1 << subBits
	buckets    = subBuckets * 64
)

type histogram struct {
	counts   [buckets]uint64
	count    uint64
	sumUs    float64
	minUs    int64
	maxUs    int64
	hasValue bool
}

func bucketOf(us int64) int {
	if us < subBuckets {
		if us < 0 {
			return 0
		}
		return int(us)
	}
	shift := bits.Len64(uint64(us)) - subBits - 1
	return subBuckets + shift*subBuckets + int(us>>uint(shift)) - subBuckets
}

// bucketValue is the middle of bucket index's range, in microseconds.
func bucketValue(index int) float64 {
	if index < subBuckets {
		return float64(index)
	}
	shift := (index - subBuckets) / subBuckets
	low := int64((index-subBuckets)%subBuckets+subBuckets) << uint(shift)
	return float64(low) + float64(int64(1)<<uint(shift)-1)/2
}

func (h *histogram) record(us int64) {
	h.counts[bucketOf(us)]++
	h.count++
	h.sumUs += float64(us)
	if !h.hasValue || us < h.minUs {
		h.minUs = us
	}
	if !h.hasValue || us > h.maxUs {
		h.maxUs = us
	}
	h.hasValue = true
}

func (h *histogram) merge(other *histogram) {
	if !other.hasValue {
		return
	}
	for i, c := range other.counts {
		h.counts[i] += c
	}
	h.count += other.count
	h.sumUs += other.sumUs
	if !h.hasValue || other.minUs < h.minUs {
		h.minUs = other.minUs
	}
	if !h.hasValue || other.maxUs > h.maxUs {
		h.maxUs = other.maxUs
	}
	h.hasValue = true
}

// percentile is the smallest recorded latency (to the histogram's precision)
// at or above which lies p percent of the samples, clamped to [min, max].
func (h *histogram) percentile(p float64) float64 {
	rank := uint64(math.Ceil(p / 100 * float64(h.count)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return math.Max(float64(h.minUs), math.Min(float64(h.maxUs), bucketValue(i)))
		}
	}
	return float64(h.maxUs)
}

type errorCounts struct {
	Connect uint64 `json:"connect"`
	Read    uint64 `json:"read"`
	Write   uint64 `json:"write"`
	Status  uint64 `json:"status"`
	Timeout uint64 `json:"timeout"`
}

type latency struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
}

type result struct {
	Requests        uint64      `json:"requests"`
	DurationUs      int64       `json:"duration_us"`
	Bytes           uint64      `json:"bytes"`
	Errors          errorCounts `json:"errors"`
	LatencyUs       *latency    `json:"latency_us"`
	SentReads       uint64      `json:"sent_reads"`
	SentWrites      uint64      `json:"sent_writes"`
	Threads         int         `json:"threads"`
	CPUs            float64     `json:"cpu_s"`
	Clients         int         `json:"clients"`
	GrpcConnections int         `json:"grpc_connections"`
	FirstError      string      `json:"first_error,omitempty"`
}

// clientStats is what one client goroutine counted; merged at the end.
type clientStats struct {
	hist       histogram
	errors     errorCounts
	ok         uint64
	bytes      uint64
	sentReads  uint64
	sentWrites uint64
	firstError string
}

type settings struct {
	endpoints   []string
	clients     int
	conns       int
	duration    time.Duration
	timeout     time.Duration
	keyPrefix   string
	keys        int
	readPercent int
	tag         string
	seed        int64
}

func parseSettings() (settings, error) {
	endpoints := flag.String("endpoints", "", "comma-separated client URLs of the members")
	clients := flag.Int("clients", 256, "concurrent clients, one request outstanding each")
	conns := flag.Int("conns", 24, "gRPC connections shared by the clients")
	duration := flag.Int("duration", 10, "seconds of load (1 to 3600)")
	timeout := flag.Int("timeout", 10, "per-request timeout in seconds")
	keyPrefix := flag.String("key-prefix", "kv-", "three bytes every key starts with")
	keys := flag.Int("keys", 100000, "keys drawn uniformly from [0, keys)")
	readPercent := flag.Int("read-percent", 0, "percentage of requests that read")
	tag := flag.String("tag", "", "the workload name written into every value")
	seed := flag.Int64("seed", 1, "seeds every client's key choice")
	flag.Parse()
	s := settings{
		endpoints:   strings.Split(*endpoints, ","),
		clients:     *clients,
		conns:       *conns,
		duration:    time.Duration(*duration) * time.Second,
		timeout:     time.Duration(*timeout) * time.Second,
		keyPrefix:   *keyPrefix,
		keys:        *keys,
		readPercent: *readPercent,
		tag:         *tag,
		seed:        *seed,
	}
	switch {
	case flag.NArg() > 0:
		return s, fmt.Errorf("unexpected argument %q", flag.Arg(0))
	case *endpoints == "":
		return s, errors.New("-endpoints is required")
	case s.clients < 1 || s.clients > 10000:
		return s, fmt.Errorf("-clients must be 1 to 10000, got %d", s.clients)
	case s.conns < 1 || s.conns > s.clients:
		return s, fmt.Errorf("-conns must be 1 to -clients, got %d", s.conns)
	case *duration < 1 || *duration > 3600:
		return s, fmt.Errorf("-duration must be 1 to 3600 seconds, got %d", *duration)
	case *timeout < 1 || *timeout > 60:
		return s, fmt.Errorf("-timeout must be 1 to 60 seconds, got %d", *timeout)
	case len(s.keyPrefix) != 3:
		return s, fmt.Errorf("-key-prefix must be three bytes, got %q", s.keyPrefix)
	case s.keys < 1 || s.keys > 1000000:
		return s, fmt.Errorf("-keys must be 1 to 1000000, got %d", s.keys)
	case s.readPercent < 0 || s.readPercent > 100:
		return s, fmt.Errorf("-read-percent must be 0 to 100, got %d", s.readPercent)
	case s.tag == "":
		return s, errors.New("-tag is required")
	}
	return s, nil
}

// clientValue is threadValue(tag, client) of lua.ts: `<tag>-t<client>-` padded to 64 bytes.
func clientValue(tag string, client int) string {
	head := fmt.Sprintf("%s-t%d-", tag, client)
	if len(head) > valueBytes {
		head = head[:valueBytes]
	}
	return head + strings.Repeat(".", valueBytes-len(head))
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	seconds := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return seconds(usage.Utime) + seconds(usage.Stime)
}

// runClient issues requests one at a time until run is done. A request that
// fails because the run ended is not counted, like one wrk leaves in flight.
// The run's deadline is checked as well as its context: an error that the
// deadline caused (the server's copy of it can answer first) may arrive before
// the context's own timer has marked it done.
func runClient(run context.Context, cli *clientv3.Client, s settings, index int, stats *clientStats) {
	deadline, _ := run.Deadline()
	random := rand.New(rand.NewSource(s.seed*1009 + int64(index)))
	value := clientValue(s.tag, index)
	for run.Err() == nil {
		key := fmt.Sprintf("%s%06d", s.keyPrefix, random.Intn(s.keys))
		read := s.readPercent > 0 && random.Intn(100) < s.readPercent
		if read {
			stats.sentReads++
		} else {
			stats.sentWrites++
		}
		ctx, cancel := context.WithTimeout(run, s.timeout)
		started := time.Now()
		var err error
		if read {
			var answer *clientv3.GetResponse
			answer, err = cli.Get(ctx, key)
			if err == nil {
				for _, kv := range answer.Kvs {
					stats.bytes += uint64(len(kv.Value))
				}
			}
		} else {
			_, err = cli.Put(ctx, key, value)
		}
		elapsed := time.Since(started)
		cancel()
		if err == nil {
			stats.ok++
			stats.hist.record(elapsed.Microseconds())
			continue
		}
		if run.Err() != nil || !time.Now().Before(deadline) {
			return
		}
		if stats.firstError == "" {
			stats.firstError = err.Error()
		}
		if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
			stats.errors.Timeout++
		} else {
			// An answer, but an error: like an HTTP status above 399 in wrk.
			stats.errors.Status++
			stats.hist.record(elapsed.Microseconds())
		}
	}
}

func run(s settings) (result, error) {
	quiet := zap.NewProductionConfig()
	quiet.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	connections := make([]*clientv3.Client, s.conns)
	defer func() {
		for _, cli := range connections {
			if cli != nil {
				cli.Close()
			}
		}
	}()
	for i := range connections {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{s.endpoints[i%len(s.endpoints)]},
			DialTimeout: 5 * time.Second,
			LogConfig:   &quiet,
		})
		if err != nil {
			return result{}, fmt.Errorf("connecting to %s: %v", s.endpoints[i%len(s.endpoints)], err)
		}
		connections[i] = cli
		// gRPC dials lazily and waits for a connection: one bounded request
		// makes a member that cannot be reached fail the run here, rather
		// than hold every client silently until the run ends.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Get(ctx, "etcd-load-probe")
		cancel()
		if err != nil {
			return result{}, fmt.Errorf("no answer from %s: %v", s.endpoints[i%len(s.endpoints)], err)
		}
	}
	stats := make([]clientStats, s.clients)
	cpuBefore := cpuSeconds()
	started := time.Now()
	runCtx, stop := context.WithTimeout(context.Background(), s.duration)
	defer stop()
	var wg sync.WaitGroup
	for i := 0; i < s.clients; i++ {
		wg.Add(1)
		go func(index int) {
			defer wg.Done()
			runClient(runCtx, connections[index%s.conns], s, index+1, &stats[index])
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(started)
	if elapsed > s.duration {
		elapsed = s.duration
	}
	out := result{
		DurationUs:      elapsed.Microseconds(),
		Threads:         s.conns,
		CPUs:            math.Round((cpuSeconds()-cpuBefore)*1000) / 1000,
		Clients:         s.clients,
		GrpcConnections: s.conns,
	}
	var all histogram
	for i := range stats {
		st := &stats[i]
		all.merge(&st.hist)
		out.Requests += st.ok + st.errors.Status
		out.Bytes += st.bytes
		out.SentReads += st.sentReads
		out.SentWrites += st.sentWrites
		out.Errors.Status += st.errors.Status
		out.Errors.Timeout += st.errors.Timeout
		if out.FirstError == "" {
			out.FirstError = st.firstError
		}
	}
	if all.hasValue {
		out.LatencyUs = &latency{
			Min:  float64(all.minUs),
			Mean: math.Round(all.sumUs / float64(all.count)),
			Max:  float64(all.maxUs),
			P50:  math.Round(all.percentile(50)),
			P90:  math.Round(all.percentile(90)),
			P99:  math.Round(all.percentile(99)),
			P999: math.Round(all.percentile(99.9)),
		}
	}
	return out, nil
}

func main() {
	s, err := parseSettings()
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd_load: %v\n", err)
		os.Exit(2)
	}
	out, err := run(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd_load: %v\n", err)
		os.Exit(1)
	}
	line, err := json.Marshal(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd_load: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s\n", resultMarker, line)
}
