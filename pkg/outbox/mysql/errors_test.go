package mysql_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/google/uuid"

	"github.com/esflow/esflow/pkg/eventstore"
	mysqlstore "github.com/esflow/esflow/pkg/eventstore/mysql"
	"github.com/esflow/esflow/pkg/outbox"
	"github.com/esflow/esflow/pkg/outbox/mysql"
)

// TestStoppedServerIsUnavailable: an outbox on a MySQL address where no
// server listens fails its appends and the relay's reads with
// eventstore.ErrUnavailable.
func TestStoppedServerIsUnavailable(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	db, err := mysqlstore.OpenDB("mysql://esflow@" + addr + "/esflow")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := mysqlstore.New(db, mysqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := mysql.New(store, mysql.Config{})
	if err != nil {
		t.Fatal(err)
	}
	appendErr := o.AppendWithOutbox(ctx, []eventstore.Record{{StreamID: uuid.New(), Position: 0, Topic: "T", Data: []byte("{}")}},
		[]outbox.Message{{Topic: "t", Key: []byte("k"), Value: []byte("v")}})
	_, fetchErr := o.Fetch(ctx, outbox.Shard{}, 10)
	_, backlogErr := o.Backlog(ctx, outbox.Shard{})
	for name, err := range map[string]error{"append": appendErr, "fetch": fetchErr, "backlog": backlogErr} {
		if !errors.Is(err, eventstore.ErrUnavailable) {
			t.Errorf("%s on a stopped server: %v", name, err)
		}
	}
}
