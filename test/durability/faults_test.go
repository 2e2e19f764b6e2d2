package durability

import (
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/facteur/facteur/store/spool"
	"github.com/facteur/facteur/test/harness"
)

// TestAcceptFaultAtEachStepGivesTemporaryReplyAndLeavesNothing makes each
// step of accepting a message fail in turn (DESIGN.md "Durability rules":
// write, fsync the file, rename it into place, fsync the directory, insert
// the rows, COMMIT) through the spool's fault hook and database triggers.
// Each must answer a temporary reply at the end of DATA (452 4.3.1 for the
// spool, 451 4.3.0 for the database), leave no spool file, no queue row and
// no accepted_log row behind, and keep the session usable: the next message
// is queued.
func TestAcceptFaultAtEachStepGivesTemporaryReplyAndLeavesNothing(t *testing.T) {
	var failStep atomic.Int32
	var failErr atomic.Value // error
	s := harness.NewStack(t, harness.StackOptions{Spool: spool.Options{Hooks: spool.Hooks{
		Before: func(step spool.Step, _ string) error {
			if spool.Step(failStep.Load()) == step {
				return failErr.Load().(error)
			}
			return nil
		}}}})
	// A trigger that fails the enqueue transaction: at the insert of the
	// recipients (before COMMIT), or deferred to COMMIT itself.
	s.Exec(`CREATE TABLE fault_switch (what text PRIMARY KEY)`)
	s.Exec(`CREATE FUNCTION fault_maybe() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM fault_switch WHERE what = TG_ARGV[0]) THEN
    RAISE EXCEPTION 'injected fault at %', TG_ARGV[0];
  END IF;
  RETURN NEW;
END $$`)
	s.Exec(`CREATE TRIGGER fault_insert BEFORE INSERT ON queue_recipient FOR EACH ROW EXECUTE FUNCTION fault_maybe('insert')`)
	s.Exec(`CREATE CONSTRAINT TRIGGER fault_commit AFTER INSERT ON queue_message DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION fault_maybe('commit')`)

	type fault struct {
		name string
		step spool.Step // a spool step, or 0 for the database
		err  error
		db   string // fault_switch value
		want string
	}
	faults := []fault{
		{"create", spool.StepCreate, syscall.EIO, "", "452 4.3.1 "},
		{"write", spool.StepWrite, syscall.EIO, "", "452 4.3.1 "},
		{"write ENOSPC", spool.StepWrite, syscall.ENOSPC, "", "452 4.3.1 "},
		{"file fsync", spool.StepSyncFile, syscall.EIO, "", "452 4.3.1 "},
		{"rename", spool.StepLink, syscall.EIO, "", "452 4.3.1 "},
		{"directory fsync", spool.StepSyncDir, syscall.EIO, "", "452 4.3.1 "},
		{"insert rows", 0, nil, "insert", "451 4.3.0 "},
		{"commit", 0, nil, "commit", "451 4.3.0 "},
	}
	c := s.Greeted(t, s.MX)
	c.MustCmd(t, "EHLO client.test", "250 ")
	passed := 0
	for i, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			if f.step != 0 {
				failErr.Store(f.err)
				failStep.Store(int32(f.step))
			} else {
				s.Exec(`INSERT INTO fault_switch VALUES ($1)`, f.db)
			}
			id := fmt.Sprintf("<fault-%d@client.test>", i)
			_, _, err := c.Send("someone@foreign.test", []string{harness.Alice, harness.Bob},
				harness.Message("someone@foreign.test", harness.Alice, id, f.name))
			failStep.Store(0)
			s.Exec(`DELETE FROM fault_switch`)
			if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(f.want)) {
				t.Fatalf("end of data: %v, want %q", err, f.want)
			}
			if f.db != "" && !strings.Contains(s.Logs.String(), "injected fault at "+f.db) {
				t.Errorf("the database fault at %s did not fire", f.db)
			}
			if n := s.SpoolFiles(); n != 0 {
				t.Errorf("%d spool files left behind", n)
			}
			if n := s.Queued(); n != 0 {
				t.Errorf("%d queue rows left behind", n)
			}
			if n := s.Count(`SELECT count(*) FROM accepted_log`); n != 0 {
				t.Errorf("%d accepted_log rows left behind", n)
			}
			// The session goes on, and the next message is queued.
			ok := fmt.Sprintf("<after-fault-%d@client.test>", i)
			if out, _, err := c.Send("someone@foreign.test", []string{harness.Alice},
				harness.Message("someone@foreign.test", harness.Alice, ok, "after")); out != harness.Accepted {
				t.Fatalf("message after the fault: %v", err)
			}
			if n := s.Queued(); n != 1 {
				t.Errorf("%d queue rows after the good message, want 1", n)
			}
			s.Exec(`DELETE FROM queue_recipient`)
			s.Exec(`DELETE FROM queue_message`)
			s.Exec(`DELETE FROM accepted_log`)
			// The good message's body goes too, so that the next case
			// counts from zero.
			removeCommitted(t, s)
			if !t.Failed() {
				passed++
			}
		})
	}
	t.Logf("FIGURES accept faults: cases passed=%d/%d", passed, len(faults))
}

// removeCommitted removes every committed body of the stack's spool.
func removeCommitted(t *testing.T, s *harness.Stack) {
	t.Helper()
	var keys []string
	if err := s.Spool.Keys(t.Context(), func(key string, _ time.Time) error { keys = append(keys, key); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := s.Spool.Remove(k); err != nil {
			t.Fatal(err)
		}
	}
}
