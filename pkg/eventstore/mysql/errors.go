package mysql

import (
	"errors"

	drv "github.com/go-sql-driver/mysql"

	"github.com/esflow/esflow/internal/dberr"
	"github.com/esflow/esflow/pkg/eventstore"
)

// Server error numbers that mean "retry later" (MySQL and MariaDB share
// them; https://mariadb.com/kb/en/mariadb-error-codes/).
const (
	errConCount          = 1040 // ER_CON_COUNT_ERROR: too many connections
	errServerShutdown    = 1053 // ER_SERVER_SHUTDOWN
	errTooManyUserConns  = 1203 // ER_TOO_MANY_USER_CONNECTIONS
	errLockWaitTimeout   = 1205 // ER_LOCK_WAIT_TIMEOUT (innodb_lock_wait_timeout)
	errUserLimitReached  = 1226 // ER_USER_LIMIT_REACHED: an account's MAX_USER_CONNECTIONS (or hourly limit)
	errLockDeadlock      = 1213 // ER_LOCK_DEADLOCK: the transaction was rolled back
	errQueryInterrupted  = 1317 // ER_QUERY_INTERRUPTED (KILL QUERY, max_statement_time)
	errConnectionKilled  = 1927 // ER_CONNECTION_KILLED (MariaDB: KILL CONNECTION)
	errStatementTimeout  = 1969 // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
	errClientInteraction = 4031 // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8: idle disconnect)
)

// TranslateError marks the go-sql-driver/mysql errors that mean "retry
// later" as [eventstore.ErrUnavailable] (keeping the driver's error as the
// cause) and returns every other error unchanged: too many connections
// (server-wide or for the account),
// server shutdown, deadlock, lock wait timeout, a killed query or
// connection, a statement timeout, and a connection the driver or
// database/sql found broken (mysql.ErrInvalidConn, driver.ErrBadConn,
// refused or reset). The outbox backend uses it too.
func TranslateError(err error) error {
	if err == nil || errors.Is(err, eventstore.ErrUnavailable) {
		return err
	}
	var me *drv.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case errConCount, errServerShutdown, errTooManyUserConns, errLockWaitTimeout, errUserLimitReached, errLockDeadlock,
			errQueryInterrupted, errConnectionKilled, errStatementTimeout, errClientInteraction:
			return eventstore.Unavailable(err)
		}
		return err
	}
	if errors.Is(err, drv.ErrInvalidConn) || dberr.Transport(err) {
		return eventstore.Unavailable(err)
	}
	return err
}
