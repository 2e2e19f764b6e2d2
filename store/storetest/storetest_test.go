package storetest_test

import (
	"context"
	"testing"

	"github.com/facteur/facteur/store/storetest"
)

func TestFreshDatabasesAreMigratedAndSeparate(t *testing.T) {
	a := storetest.New(t)
	b := storetest.New(t)
	if a.Name == b.Name {
		t.Fatalf("two tests got the same database %s", a.Name)
	}
	ctx := context.Background()
	if _, err := a.Pool.Exec(ctx, "INSERT INTO domain (name) VALUES ('a.test')"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.Pool.QueryRow(ctx, "SELECT count(*) FROM domain").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database b sees %d domains written to a", n)
	}
}
