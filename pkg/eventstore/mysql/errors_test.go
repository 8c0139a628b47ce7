package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"testing"

	drv "github.com/go-sql-driver/mysql"
	"github.com/google/uuid"

	"github.com/esflow/esflow/internal/mysqltest"
	"github.com/esflow/esflow/pkg/eventstore"
	"github.com/esflow/esflow/pkg/eventstore/mysql"
)

// TestDeadlockIsUnavailable provokes a real InnoDB deadlock on MariaDB
// (two transactions locking two rows in opposite orders): the server rolls
// one back with error 1213, which TranslateError marks retryable.
func TestDeadlockIsUnavailable(t *testing.T) {
	ctx := testCtx(t)
	db, err := mysql.OpenDB(mysqltest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE TABLE pair (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO pair VALUES (1, 0), (2, 0)"); err != nil {
		t.Fatal(err)
	}
	begin := func() *sql.Tx {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	txA, txB := begin(), begin()
	defer txA.Rollback()
	defer txB.Rollback()
	for _, s := range []struct {
		tx  *sql.Tx
		sql string
	}{{txA, "UPDATE pair SET v = 1 WHERE id = 1"}, {txB, "UPDATE pair SET v = 1 WHERE id = 2"}} {
		if _, err := s.tx.ExecContext(ctx, s.sql); err != nil {
			t.Fatal(err)
		}
	}
	errA := make(chan error, 1)
	go func() {
		_, err := txA.ExecContext(ctx, "UPDATE pair SET v = 2 WHERE id = 2")
		if err != nil {
			_ = txA.Rollback()
		}
		errA <- err
	}()
	_, errB := txB.ExecContext(ctx, "UPDATE pair SET v = 2 WHERE id = 1")
	if errB != nil {
		_ = txB.Rollback()
	}
	victim := errB
	if errB == nil {
		victim = <-errA
	} else if err := <-errA; err != nil {
		t.Fatalf("both transactions failed: %v / %v", err, errB)
	}
	var me *drv.MySQLError
	if !errors.As(victim, &me) || me.Number != 1213 {
		t.Fatalf("want a deadlock (1213), got %v", victim)
	}
	if got := mysql.TranslateError(victim); !errors.Is(got, eventstore.ErrUnavailable) || !errors.As(got, &me) {
		t.Fatalf("TranslateError(deadlock) = %v", got)
	}
	_ = txA.Rollback()
	_ = txB.Rollback()
	if _, err := db.ExecContext(ctx, "INSERT INTO pair VALUES (1, 0)"); err == nil || errors.Is(mysql.TranslateError(err), eventstore.ErrUnavailable) {
		t.Fatalf("duplicate key translated as unavailable: %v", err)
	}
}

// TestStoppedServerIsUnavailable: a store on a port where no server
// listens fails every operation with ErrUnavailable.
func TestStoppedServerIsUnavailable(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	db, err := mysql.OpenDB("mysql://esflow@" + addr + "/esflow")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := mysql.New(db, mysql.Config{})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	_, readErr := s.ReadStream(ctx, id, eventstore.StreamQuery{})
	appendErr := s.Append(ctx, []eventstore.Record{{StreamID: id, Position: 0, Topic: "T", Data: []byte("{}")}})
	_, maxErr := s.MaxNotificationID(ctx)
	for name, err := range map[string]error{"read": readErr, "append": appendErr, "max notification id": maxErr} {
		if !errors.Is(err, eventstore.ErrUnavailable) {
			t.Errorf("%s on a stopped server: %v", name, err)
		}
	}
}
