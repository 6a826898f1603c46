package main

import (
	"reflect"
	"strings"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
)

// statsCollector exports every uint64 field of the struct stats() returns
// (a server's Stats()) as a counter named prefix_<field>_total, so each
// server's own counters reach /metrics without the servers knowing
// Prometheus.
func statsCollector(prefix, what string, stats func() any) prometheus.Collector {
	return &structCollector{prefix: prefix, what: what, stats: stats}
}

type structCollector struct {
	prefix, what string
	stats        func() any
}

func (c *structCollector) fields() (names []string, values []float64) {
	v := reflect.ValueOf(c.stats())
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).Kind() != reflect.Uint64 {
			continue
		}
		names = append(names, c.prefix+"_"+snake(v.Type().Field(i).Name)+"_total")
		values = append(values, float64(v.Field(i).Uint()))
	}
	return names, values
}

func (c *structCollector) Describe(ch chan<- *prometheus.Desc) {
	names, _ := c.fields()
	for _, n := range names {
		ch <- prometheus.NewDesc(n, c.what+" counter.", nil, nil)
	}
}

func (c *structCollector) Collect(ch chan<- prometheus.Metric) {
	names, values := c.fields()
	for i, n := range names {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(n, c.what+" counter.", nil, nil), prometheus.CounterValue, values[i])
	}
}

// snake turns "ProxyOffers" into "proxy_offers".
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
