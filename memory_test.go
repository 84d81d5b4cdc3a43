package pgsession_test

import (
	"testing"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/pgsessiontest"
)

func TestMemoryBackend(t *testing.T) {
	pgsessiontest.TestBackend(t, func(*testing.T) pgsession.Backend { return pgsession.NewMemoryBackend() })
}
