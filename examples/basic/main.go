// Command basic is a small app on pgsession: a visit counter, login and
// logout with key rotation, "log out all my devices", server-sent events
// that read the session while streaming, a health check that freezes the
// session, and the session statistics at /debug/vars.
//
//	go run ./examples/basic                                  # memory backend
//	go run ./examples/basic -database-url postgres://...     # PostgreSQL
//
// Hash keys come from -hash-key or $SESSION_HASH_KEY: comma-separated, hex
// or base64, 32 bytes or more each; the first signs, all verify. Without
// one, a random key is generated and sessions do not survive a restart.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/pgsession/pgsession"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, os.Args[1:]); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("basic", flag.ContinueOnError)
	addr := fs.String("addr", "localhost:8080", "listen address")
	dbURL := fs.String("database-url", os.Getenv("DATABASE_URL"), "PostgreSQL URL (default $DATABASE_URL); empty for the memory backend")
	hashKeys := fs.String("hash-key", os.Getenv("SESSION_HASH_KEY"), "comma-separated hash keys, hex or base64, >= 32 bytes each (default $SESSION_HASH_KEY)")
	insecure := fs.Bool("insecure-cookie", false, "drop the Secure cookie attribute, to serve plain HTTP on a host other than localhost")
	if err := fs.Parse(args); err != nil {
		return err
	}

	keys, err := parseHashKeys(*hashKeys)
	if err != nil {
		return err
	}
	if keys == nil {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		keys = [][]byte{key}
		log.Warn("no -hash-key or $SESSION_HASH_KEY: using a random key, so sessions will not survive a restart")
	}

	ctx := context.Background()
	var backend pgsession.Backend
	if *dbURL == "" {
		backend = pgsession.NewMemoryBackend()
		log.Info("using the memory backend: sessions live in this process only (give -database-url for PostgreSQL)")
	} else {
		db, err := sqlx.Open("postgres", *dbURL)
		if err != nil {
			return err
		}
		defer db.Close()
		pg := pgsession.NewPostgresBackend(db)
		if err := pg.Migrate(ctx); err != nil {
			return err
		}
		defer pg.Close()
		backend = pg
		log.Info("using PostgreSQL", "table", pgsession.DefaultTable)
	}

	m, err := pgsession.New(pgsession.Config{
		Backend:      backend,
		HashKeys:     keys,
		PrincipalKey: userKey,
		Cookie:       pgsession.CookieConfig{Insecure: *insecure},
		Logger:       log,
	})
	if err != nil {
		return err
	}
	publishStats(m)

	srv := &http.Server{Addr: *addr, Handler: newApp(m, log), ReadHeaderTimeout: 10 * time.Second}
	log.Info("listening", "url", "http://"+*addr)
	if host, _, _ := net.SplitHostPort(*addr); !*insecure && host != "localhost" && host != "127.0.0.1" && host != "::1" {
		log.Warn("the session cookie is Secure: over plain HTTP browsers keep it only for localhost and loopback addresses; serve HTTPS or pass -insecure-cookie for testing")
	}
	return srv.ListenAndServe()
}

// parseHashKeys reads a comma-separated list of hex or base64 keys. It
// returns nil for an empty list.
func parseHashKeys(list string) ([][]byte, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var keys [][]byte
	for i, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		k, err := hex.DecodeString(s)
		if err != nil {
			k, err = base64.StdEncoding.DecodeString(s)
		}
		if err != nil {
			return nil, fmt.Errorf("hash key %d: neither hex nor base64", i+1)
		}
		if len(k) < pgsession.MinHashKeyLength {
			return nil, fmt.Errorf("hash key %d: %d bytes, want at least %d", i+1, len(k), pgsession.MinHashKeyLength)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no hash keys")
	}
	return keys, nil
}
