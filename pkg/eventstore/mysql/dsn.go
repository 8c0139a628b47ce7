package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	drv "github.com/go-sql-driver/mysql"
)

// ParseDSN turns a connection string into a driver configuration. It
// accepts the URL form the application's DATABASE_URL uses,
//
//	mysql://user:pass@host:3306/db?param=value
//	mysql://user:pass@/db?socket=/run/mysqld/mysqld.sock
//
// (port 3306 when omitted; other query parameters are the driver's, see
// github.com/go-sql-driver/mysql), or a go-sql-driver DSN
// ("user:pass@tcp(host:3306)/db"). Whatever the input says, the result
// parses DATETIME columns as UTC time.Time (parseTime, loc=UTC), sends
// arguments to the server as prepared-statement parameters
// (interpolateParams=false) and runs one statement per call
// (multiStatements=false).
func ParseDSN(raw string) (*drv.Config, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, errors.New("mysql: empty DSN")
	}
	var cfg *drv.Config
	if strings.HasPrefix(raw, "mysql://") || strings.HasPrefix(raw, "mariadb://") {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("mysql: parse URL: %w", err)
		}
		q := u.Query()
		socket := q.Get("socket")
		q.Del("socket")
		db := strings.TrimPrefix(u.Path, "/")
		if strings.Contains(db, "/") {
			return nil, fmt.Errorf("mysql: URL %q: database name contains '/'", u.Redacted())
		}
		cfg, err = drv.ParseDSN("/" + db + "?" + q.Encode())
		if err != nil {
			return nil, fmt.Errorf("mysql: URL %q: %w", u.Redacted(), err)
		}
		if u.User != nil {
			cfg.User = u.User.Username()
			cfg.Passwd, _ = u.User.Password()
		}
		switch {
		case socket != "":
			cfg.Net, cfg.Addr = "unix", socket
		case u.Host == "":
			cfg.Net, cfg.Addr = "tcp", "127.0.0.1:3306"
		default:
			cfg.Net, cfg.Addr = "tcp", u.Host
			if u.Port() == "" {
				cfg.Addr = net.JoinHostPort(u.Hostname(), "3306")
			}
		}
	} else {
		if i := strings.Index(raw, "://"); i > 0 && !strings.ContainsAny(raw[:i], "/@:(") {
			return nil, fmt.Errorf("mysql: unsupported scheme %q", raw[:i])
		}
		var err error
		if cfg, err = drv.ParseDSN(raw); err != nil {
			return nil, fmt.Errorf("mysql: %w", err)
		}
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.InterpolateParams = false
	cfg.MultiStatements = false
	return cfg, nil
}

// OpenDB returns a connection pool for dsn (see [ParseDSN]) without
// connecting. Its sessions run at READ COMMITTED, so the locking reads of
// [Store.ReadNotifications] take no gap locks that would hold up
// appends. The pool keeps up to 16 idle connections, so a burst of
// concurrent callers does not reconnect (and re-prepare statements) each
// time.
func OpenDB(dsn string) (*sql.DB, error) {
	cfg, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := drv.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql: %w", err)
	}
	db := sql.OpenDB(readCommitted{conn})
	db.SetMaxIdleConns(16)
	db.SetConnMaxLifetime(time.Hour)
	return db, nil
}

// readCommitted sets each new session's isolation level with the
// standard statement, which MariaDB and MySQL both accept (the variable's
// name differs between them).
type readCommitted struct{ driver.Connector }

func (c readCommitted) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("mysql: driver connection cannot execute statements")
	}
	if _, err := ex.ExecContext(ctx, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", nil); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("mysql: set isolation level: %w", err)
	}
	return conn, nil
}
