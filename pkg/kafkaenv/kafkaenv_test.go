package kafkaenv

import (
	"errors"
	"testing"
)

func TestFromEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  map[string]string
		ok   bool
		tls  bool
		sasl string
	}{
		{"plain brokers", map[string]string{"KAFKA_BROKERS": "127.0.0.1:9092, 127.0.0.1:9093"}, true, false, ""},
		{"missing brokers", map[string]string{}, false, false, ""},
		{"bad broker", map[string]string{"KAFKA_BROKERS": "nohostport"}, false, false, ""},
		{"tls", map[string]string{"KAFKA_BROKERS": "h:1", "KAFKA_TLS": "true"}, true, true, ""},
		{"tls bad bool", map[string]string{"KAFKA_BROKERS": "h:1", "KAFKA_TLS": "yes please"}, false, false, ""},
		{"missing ca file", map[string]string{"KAFKA_BROKERS": "h:1", "KAFKA_TLS_CA_FILE": "/nonexistent.pem"}, false, false, ""},
		{"cert without key", map[string]string{"KAFKA_BROKERS": "h:1", "KAFKA_TLS_CERT_FILE": "/c.pem"}, false, false, ""},
		{"sasl plain", map[string]string{"KAFKA_BROKERS": "h:1", "KAFKA_SASL_MECHANISM": "plain", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, true, false, "PLAIN"},
		{"sasl scram", map[string]string{"KAFKA_BROKERS": "h:1", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, true, false, "SCRAM-SHA-512"},
		{"sasl unknown", map[string]string{"KAFKA_BROKERS": "h:1", "KAFKA_SASL_MECHANISM": "GSSAPI"}, false, false, ""},
		{"user without mechanism", map[string]string{"KAFKA_BROKERS": "h:1", "KAFKA_SASL_USERNAME": "u"}, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := from(func(k string) string { return tc.env[k] }, "svc")
			if !tc.ok {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("err = %v, want ErrConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cfg.TLS != nil) != tc.tls || cfg.ClientID != "svc" || len(cfg.Brokers) == 0 {
				t.Errorf("cfg = %+v", cfg)
			}
			if tc.sasl != "" && (cfg.SASL == nil || cfg.SASL.Name() != tc.sasl) {
				t.Errorf("sasl = %v, want %s", cfg.SASL, tc.sasl)
			}
			if cfg.Transport() == nil || cfg.Dialer() == nil {
				t.Error("no transport")
			}
		})
	}
}
