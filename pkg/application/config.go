package application

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Environment variables read by [ConfigFromEnv].
const (
	EnvDatabaseURL = "DATABASE_URL" // where events live; see Config.DatabaseURL
	EnvDBURI       = "DB_URI"       // alias of DATABASE_URL (the seed pages' name)
	EnvCipherKey   = "CIPHER_KEY"   // base64 of 32 random bytes; enables AES-256-GCM
	EnvCompress    = "ESFLOW_COMPRESS"
	// EnvOutboxMode selects how the PostgreSQL outbox carries messages:
	// "table" (default) or "wal"; see Config.OutboxMode.
	EnvOutboxMode = "ESFLOW_OUTBOX_MODE"
)

// ErrConfig reports an invalid configuration value.
var ErrConfig = errors.New("application: invalid configuration")

// Backend names a storage backend chosen by a database URL.
type Backend string

// The backends a database URL can select.
const (
	BackendMemory   Backend = "memory"
	BackendSQLite   Backend = "sqlite"
	BackendPostgres Backend = "postgres"
	BackendMySQL    Backend = "mysql"
)

// ParseDatabaseURL tells which backend a URL selects:
//
//	memory:                                   in-process, nothing persisted
//	sqlite::memory:  sqlite:///:memory:       SQLite in memory
//	sqlite:///var/lib/app/events.db           SQLite file (absolute path)
//	postgres://user:pass@host:5432/db         PostgreSQL (also postgresql://)
//	mysql://user:pass@host:3306/db            MariaDB or MySQL
//
// The empty string means SQLite in memory.
func ParseDatabaseURL(raw string) (Backend, error) {
	s := strings.TrimSpace(raw)
	switch {
	case s == "" || s == "memory:" || s == "memory://":
		if s == "" {
			return BackendSQLite, nil
		}
		return BackendMemory, nil
	case strings.HasPrefix(s, "sqlite:"):
		return BackendSQLite, nil
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		if _, err := url.Parse(s); err != nil {
			return "", fmt.Errorf("%w: DATABASE_URL: %v", ErrConfig, err)
		}
		return BackendPostgres, nil
	case strings.HasPrefix(s, "mysql://"):
		if _, err := url.Parse(s); err != nil {
			return "", fmt.Errorf("%w: DATABASE_URL: %v", ErrConfig, err)
		}
		return BackendMySQL, nil
	}
	scheme := s
	if i := strings.Index(s, ":"); i >= 0 {
		scheme = s[:i]
	}
	return "", fmt.Errorf("%w: DATABASE_URL scheme %q not supported (want memory:, sqlite:…, postgres://…, mysql://…)", ErrConfig, scheme)
}

// ConfigFromEnv reads DATABASE_URL (or DB_URI), CIPHER_KEY and
// ESFLOW_COMPRESS into a Config with CreateTables set. Other fields keep
// their defaults; set Registry before calling [New].
func ConfigFromEnv() (Config, error) {
	return configFrom(os.Getenv)
}

func configFrom(getenv func(string) string) (Config, error) {
	cfg := Config{CreateTables: true}
	cfg.DatabaseURL = getenv(EnvDatabaseURL)
	if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = getenv(EnvDBURI)
	}
	if _, err := ParseDatabaseURL(cfg.DatabaseURL); err != nil {
		return Config{}, err
	}
	cfg.CipherKey = getenv(EnvCipherKey)
	if v := getenv(EnvCompress); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, fmt.Errorf("%w: %s=%q: %v", ErrConfig, EnvCompress, v, err)
		}
		cfg.Compress = b
	}
	if v := getenv(EnvOutboxMode); v != "" {
		cfg.OutboxMode = OutboxMode(v)
		if err := cfg.OutboxMode.valid(); err != nil {
			return Config{}, err
		}
	}
	return cfg, nil
}
