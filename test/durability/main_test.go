// Package durability holds facteur's durability suites (issue 5): fault
// injection at each step of accepting a message (fast, in the default run),
// and, with FACTEUR_LONG=1, facteur killed with SIGKILL under load, its
// PostgreSQL stopped and restarted, a full spool disk and a queue row whose
// spool file is gone.
package durability

import (
	"os"
	"testing"

	"github.com/facteur/facteur/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
