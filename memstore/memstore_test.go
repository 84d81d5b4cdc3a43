package memstore_test

import (
	"testing"

	"github.com/pgsession/pgsession/backend"
	"github.com/pgsession/pgsession/memstore"
	"github.com/pgsession/pgsession/pgsessiontest"
)

func TestMemoryBackend(t *testing.T) {
	pgsessiontest.TestBackend(t, func(*testing.T) backend.Backend { return memstore.New() })
}
