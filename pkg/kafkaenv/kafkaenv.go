// Package kafkaenv reads Kafka client settings from the environment, the
// same way for every esflow service:
//
//	KAFKA_BROKERS                  host:port[,host:port…] (required)
//	KAFKA_CLIENT_ID                client id (default: the service name)
//	KAFKA_TLS                      "true" to use TLS (implied by the files below)
//	KAFKA_TLS_CA_FILE              PEM CA bundle to verify brokers with
//	KAFKA_TLS_CERT_FILE, _KEY_FILE client certificate for mutual TLS
//	KAFKA_TLS_INSECURE_SKIP_VERIFY "true" to skip verification (tests only)
//	KAFKA_SASL_MECHANISM           PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
//	KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD
package kafkaenv

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// ErrConfig reports an invalid Kafka setting.
var ErrConfig = errors.New("kafkaenv: invalid configuration")

// Config is the client side of a Kafka connection.
type Config struct {
	Brokers  []string
	ClientID string
	TLS      *tls.Config    // nil: plaintext
	SASL     sasl.Mechanism // nil: no authentication
}

// FromEnv reads the variables listed in the package doc. clientID is the
// default client id.
func FromEnv(clientID string) (Config, error) { return from(os.Getenv, clientID) }

func from(getenv func(string) string, clientID string) (Config, error) {
	cfg := Config{ClientID: clientID}
	if v := getenv("KAFKA_CLIENT_ID"); v != "" {
		cfg.ClientID = v
	}
	for _, b := range strings.Split(getenv("KAFKA_BROKERS"), ",") {
		if b = strings.TrimSpace(b); b == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(b); err != nil {
			return Config{}, fmt.Errorf("%w: KAFKA_BROKERS entry %q: %v", ErrConfig, b, err)
		}
		cfg.Brokers = append(cfg.Brokers, b)
	}
	if len(cfg.Brokers) == 0 {
		return Config{}, fmt.Errorf("%w: KAFKA_BROKERS is empty", ErrConfig)
	}
	var err error
	if cfg.TLS, err = tlsFrom(getenv); err != nil {
		return Config{}, err
	}
	if cfg.SASL, err = saslFrom(getenv); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func boolVar(getenv func(string) string, name string) (bool, error) {
	v := getenv(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s=%q is not a boolean", ErrConfig, name, v)
	}
	return b, nil
}

func tlsFrom(getenv func(string) string) (*tls.Config, error) {
	on, err := boolVar(getenv, "KAFKA_TLS")
	if err != nil {
		return nil, err
	}
	insecure, err := boolVar(getenv, "KAFKA_TLS_INSECURE_SKIP_VERIFY")
	if err != nil {
		return nil, err
	}
	ca, cert, key := getenv("KAFKA_TLS_CA_FILE"), getenv("KAFKA_TLS_CERT_FILE"), getenv("KAFKA_TLS_KEY_FILE")
	if !on && !insecure && ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // opt-in, documented as tests only
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%w: KAFKA_TLS_CA_FILE: %v", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: KAFKA_TLS_CA_FILE %s holds no PEM certificate", ErrConfig, ca)
		}
		c.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%w: KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together", ErrConfig)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %v", ErrConfig, err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

func saslFrom(getenv func(string) string) (sasl.Mechanism, error) {
	mech := strings.ToUpper(strings.TrimSpace(getenv("KAFKA_SASL_MECHANISM")))
	user, pass := getenv("KAFKA_SASL_USERNAME"), getenv("KAFKA_SASL_PASSWORD")
	switch mech {
	case "":
		if user != "" || pass != "" {
			return nil, fmt.Errorf("%w: KAFKA_SASL_USERNAME set without KAFKA_SASL_MECHANISM", ErrConfig)
		}
		return nil, nil
	case "PLAIN":
		return plain.Mechanism{Username: user, Password: pass}, nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if mech == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, user, pass)
		if err != nil {
			return nil, fmt.Errorf("%w: SCRAM: %v", ErrConfig, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("%w: KAFKA_SASL_MECHANISM %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", ErrConfig, mech)
}

// Transport returns a kafka-go transport for the settings. Each call
// returns a new one: kafka-go's shared default transport caches topic
// metadata, which hides topics created a moment ago.
func (c Config) Transport() *kafka.Transport {
	return &kafka.Transport{ClientID: c.ClientID, TLS: c.TLS, SASL: c.SASL, MetadataTTL: 5 * time.Second, DialTimeout: 5 * time.Second}
}

// Dialer returns a kafka-go dialer (used by readers) for the settings.
func (c Config) Dialer() *kafka.Dialer {
	return &kafka.Dialer{ClientID: c.ClientID, TLS: c.TLS, SASLMechanism: c.SASL, Timeout: 10 * time.Second, DualStack: true}
}
