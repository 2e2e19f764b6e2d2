package lookups_test

import (
	"context"
	"os/user"
	"testing"

	"github.com/facteur/facteur/lookups"
)

func TestSystemUser(t *testing.T) {
	ctx := context.Background()
	cur, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want bool
	}{
		{cur.Username, true},
		{"root", true},
		{"no-such-user-facteur", false},
		{"", false},
		{"-root", false},
		{".root", false},
		{"ro ot", false},
		{"../root", false},
		{"root\x00", false},
	} {
		got, err := lookups.SystemUser(ctx, tc.name)
		if err != nil || got != tc.want {
			t.Errorf("SystemUser(%q) = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}
