package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	requests *prometheus.CounterVec   // by route, method, code
	latency  *prometheus.HistogramVec // by route, method, code; watch streams excluded
	streams  prometheus.Gauge         // open watch streams
	events   prometheus.Counter       // events sent on watch streams
	storeOps *prometheus.CounterVec   // by op, result (an error code or "ok")
	handler  http.Handler
}

func newMetrics(reg *prometheus.Registry, log *slog.Logger) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peerstate_api_requests_total",
			Help: "API requests served, by route, method and HTTP status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "peerstate_api_request_duration_seconds",
			Help:    "Time to serve an API request, by route, method and HTTP status code (watch streams are not timed).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs .. 26s
		}, []string{"route", "method", "code"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "peerstate_api_watch_streams",
			Help: "Watch streams open now.",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "peerstate_api_watch_events_total",
			Help: "Events sent on watch streams.",
		}),
		storeOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "peerstate_api_store_ops_total",
			Help: "Store operations made for API requests, by op and result (ok or an error code).",
		}, []string{"op", "result"}),
	}
	m.requests = register(reg, log, m.requests)
	m.latency = register(reg, log, m.latency)
	m.streams = register(reg, log, m.streams)
	m.events = register(reg, log, m.events)
	m.storeOps = register(reg, log, m.storeOps)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)})
	return m
}

// register adds c to reg; when a collector of the same name is there
// already (a second server on one registry), that one is used.
func register[C prometheus.Collector](reg *prometheus.Registry, log *slog.Logger, c C) C {
	err := reg.Register(c)
	var dup prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
	case errors.As(err, &dup):
		if existing, ok := dup.ExistingCollector.(C); ok {
			return existing
		}
		log.Warn("api: metrics: collector registered with another type", "err", err)
	default:
		log.Warn("api: metrics: register", "err", err)
	}
	return c
}

func (m *metrics) serve(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

// storeOp counts one store operation.
func (m *metrics) storeOp(op string, err error) {
	result := "ok"
	if err != nil {
		result, _ = errorCode(err)
	}
	m.storeOps.WithLabelValues(op, result).Inc()
}

// instrument counts and times the requests of one route.
func (m *metrics) instrument(route string, next http.Handler) http.Handler {
	timed := route != "/v1/watch"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		code := strconv.Itoa(rec.status)
		m.requests.WithLabelValues(route, r.Method, code).Inc()
		if timed {
			m.latency.WithLabelValues(route, r.Method, code).Observe(time.Since(start).Seconds())
		}
	})
}

// statusRecorder remembers the status written. Unwrap lets
// http.ResponseController reach the connection's Flush.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
