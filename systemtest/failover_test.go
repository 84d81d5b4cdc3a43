package systemtest_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/pgsession/pgsession"
	"github.com/pgsession/pgsession/internal/pgtest"
)

// failoverRig is a throwaway primary with a streaming replica (which
// replicates through a proxy the test can cut), and an app reaching the
// primary through a front proxy that a failover switches to the replica.
type failoverRig struct {
	t                *testing.T
	primary, replica *pgtest.Cluster
	repl, front      *pgtest.Proxy
	app              *topoApp
}

// newFailoverRig starts the primary, the app (driver) and a first replica,
// synchronous when sync is set.
func newFailoverRig(t *testing.T, driver string, sync bool) *failoverRig {
	t.Helper()
	r := &failoverRig{t: t, primary: pgtest.NewCluster(t)}
	front, dsn := pgtest.NewProxyFor(t, r.primary.URL("pgsession_failover"))
	r.front = front
	r.addReplica(sync)
	r.app = newTopoApp(t, driver, dsn, "sessions", pgsession.WithQueryTimeout(2*time.Second))
	return r
}

// addReplica makes a replica of the current primary. With sync, the
// primary then waits for it at every commit (synchronous_commit = on).
// The setting goes in after the base backup, so a promoted replica does
// not wait for a standby of its own.
func (r *failoverRig) addReplica(sync bool) {
	r.t.Helper()
	r.repl = pgtest.NewProxy(r.t, r.primary.Addr())
	r.replica = r.primary.NewReplica(r.repl.Addr())
	names := ""
	if sync {
		names = "*"
	}
	r.primary.Exec("ALTER SYSTEM SET synchronous_standby_names = '" + names + "'")
	r.primary.Exec("ALTER SYSTEM SET synchronous_commit = on")
	r.primary.Exec("SELECT pg_reload_conf()")
	want := "async"
	if sync {
		want = "sync"
	}
	r.primary.WaitFor("the replica's state to be "+want, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = '"+want+"'", 1)
}

// failover kills the primary (immediate mode), promotes the replica and
// points the front proxy at it, cutting the app's connections.
func (r *failoverRig) failover() {
	r.t.Helper()
	r.primary.Stop()
	r.replica.Promote()
	r.front.SetTarget(r.replica.Addr())
	r.front.Reset()
	r.primary, r.replica = r.replica, nil
}

// failoverRounds is 1, or 3 with PGSESSION_LONG=1.
func failoverRounds() int {
	if longRun() {
		return 3
	}
	return 1
}

// The primary dies under load (pg_ctl -m immediate) with a synchronous
// standby, which is promoted and takes over behind the proxy: no
// acknowledged write is lost, no session of an acknowledged cookie is gone,
// no logged-out or rotated-away key works again on the new primary, and
// service is back within a few seconds.
func TestFailoverSync(t *testing.T) {
	heavy(t)
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			r := newFailoverRig(t, driver, true)
			k := newTopoChecker(t, func() string { return r.app.srv.URL }, 30*time.Second)
			stop := background(t, k, 8, 2*time.Minute, 1<<20)
			for round := range failoverRounds() {
				if round > 0 {
					r.addReplica(true)
				}
				time.Sleep(1500 * time.Millisecond)
				start := time.Now()
				r.failover()
				back, ok := k.recovery(15 * time.Second)
				t.Logf("round %d: failover %v (kill, promote, switch), service back %v after the switch", round, (time.Since(start) - back).Round(time.Millisecond), back.Round(time.Millisecond))
				if !ok || back > 2*time.Second {
					t.Errorf("service back %v after the switch (ok=%v)", back, ok)
				}
			}
			time.Sleep(500 * time.Millisecond)
			cs := stop()
			k.settle(cs, 10*time.Second)
			t.Logf("%s, %d failovers: %s", driver, failoverRounds(), k.summary())
			k.report(t)
			if k.acks.Load() == 0 {
				t.Error("no write was acknowledged")
			}
		})
	}
}

// Measured, not asserted: with asynchronous replication and the
// replication link cut 2s before the primary dies, the replica misses the
// last writes: acknowledged increments are lost, sessions of acknowledged
// logins are gone and logged-out or rotated-away keys work again. The load
// stops at the kill, so that every client's last acknowledged state is
// checked on the new primary. The figures go into docs/topology-figures.md.
func TestFailoverAsyncMeasure(t *testing.T) {
	heavy(t)
	cut := 2 * time.Second
	if longRun() {
		cut = 5 * time.Second
	}
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			r := newFailoverRig(t, driver, false)
			var acks, lost, gone, revived, dead int64
			for round := range failoverRounds() {
				if round > 0 {
					r.addReplica(false)
				}
				k := newTopoChecker(t, func() string { return r.app.srv.URL }, 30*time.Second)
				stop := background(t, k, 8, 2*time.Minute, 1<<20)
				time.Sleep(time.Second)
				r.repl.Blackhole(true)
				time.Sleep(cut)
				cs := stop()
				r.failover()
				if _, ok := k.recovery(15 * time.Second); !ok {
					t.Fatal("service did not come back after the failover")
				}
				k.settle(cs, 10*time.Second)
				t.Logf("round %d: %s", round, k.summary())
				acks += k.acks.Load()
				lost, gone, revived = lost+k.lost.Load(), gone+k.gone.Load(), revived+k.revived.Load()
				k.mu.Lock()
				dead += int64(len(k.dead))
				k.mu.Unlock()
			}
			t.Logf("FIGURES async %s, link cut %v before the kill, %d failovers: %d acknowledged increments, %d lost; "+
				"%d sessions of acknowledged logins gone; %d of %d dead keys revived",
				driver, cut, failoverRounds(), acks, lost, gone, revived, dead)
			if acks == 0 {
				t.Error("no write was acknowledged")
			}
		})
	}
}

// The synchronous standby stalls (its WAL receiver is stopped with
// SIGSTOP): commits wait for it, requests hit the query timeout, and a
// write whose commit stayed local must not be acknowledged. Then the
// primary dies and the standby takes over: no acknowledged write is lost.
func TestFailoverStalledStandby(t *testing.T) {
	heavy(t)
	const stall = 3 * time.Second
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			r := newFailoverRig(t, driver, true)
			k := newTopoChecker(t, func() string { return r.app.srv.URL }, 30*time.Second)
			stop := background(t, k, 8, 2*time.Minute, 1<<20)
			time.Sleep(time.Second)
			// Stop the standby, and the link too: WAL the proxy already
			// passed on would otherwise reach the standby when it resumes.
			pid := r.replica.WalReceiverPID()
			r.repl.Blackhole(true)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			resumed := false
			resume := func() {
				if !resumed {
					resumed = true
					_ = syscall.Kill(pid, syscall.SIGCONT)
				}
			}
			t.Cleanup(resume)
			// Writes confirmed before the stall may still be answering
			// (under -race on a loaded machine, one took over 300 ms).
			// A write whose commit stayed local can only be answered at
			// the query timeout (2 s), after this grace, so the window
			// still catches it.
			time.Sleep(time.Second)
			before := k.acks.Load()
			time.Sleep(stall)
			during := k.acks.Load() - before
			r.primary.Stop()
			resume()
			r.replica.Promote()
			r.front.SetTarget(r.replica.Addr())
			r.front.Reset()
			if _, ok := k.recovery(15 * time.Second); !ok {
				t.Fatal("service did not come back after the failover")
			}
			time.Sleep(500 * time.Millisecond)
			cs := stop()
			k.settle(cs, 10*time.Second)
			t.Logf("FIGURES stalled standby %s, %v: %d writes acknowledged during the stall; after the failover %s", driver, stall, during, k.summary())
			k.report(t)
			if during != 0 {
				t.Errorf("%d writes acknowledged while the synchronous standby was stalled", during)
			}
		})
	}
}
