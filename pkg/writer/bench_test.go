package writer_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/esflow/esflow/internal/pgtest"
)

// BenchmarkCreateWorld measures POST /v1/worlds end to end over HTTP
// (decode, event, store append plus outbox row, response) with parallel
// clients, on SQLite in memory and on PostgreSQL.
func BenchmarkCreateWorld(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			url := ""
			if backend == "postgres" {
				url = pgtest.NewDatabase(b)
			}
			e := newEnv(b, url)
			client := e.http.Client()
			b.SetParallelism(4)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := client.Post(e.http.URL+"/v1/worlds", "application/json", strings.NewReader(`{"ruler":"gods"}`))
					if err != nil {
						b.Error(err)
						return
					}
					res.Body.Close()
					if res.StatusCode != http.StatusCreated {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			})
		})
	}
}
