package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/backend"
)

func randomID() backend.ID {
	var id backend.ID
	_, _ = rand.Read(id[:])
	return id
}

// insertSessions stores n sessions created and accessed at the given times
// and returns their IDs.
func insertSessions(t *testing.T, b backend.Backend, n int, created, accessed time.Time) []backend.ID {
	t.Helper()
	ids := make([]backend.ID, n)
	for i := range ids {
		ids[i] = randomID()
		err := b.Apply(context.Background(), backend.Action{Op: backend.OpInsert, New: ids[i],
			Patch:   backend.Patch{Replace: true, Set: map[string]json.RawMessage{"i": json.RawMessage(`1`)}},
			Created: created, Accessed: accessed})
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func newManager(t *testing.T, cfg pgsession.Config) *pgsession.Manager {
	t.Helper()
	cfg.HashKeys = [][]byte{make([]byte, 32)}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := pgsession.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// withApp returns url with an application_name, to find this pool's
// server connections in pg_stat_activity.
func withApp(url, app string) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "application_name=" + app
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// exampleKey is a hash key for the Managers of these tests.
var exampleKey = []byte("an-example-secret-of-32-bytes!!!")
