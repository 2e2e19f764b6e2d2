package envelope

import "testing"

func TestRecipientOriginal(t *testing.T) {
	for _, tt := range []struct {
		r    Recipient
		want string
	}{
		{Recipient{Address: "john@example.com"}, "john@example.com"},
		{Recipient{Address: "john@example.net", Orig: "info@example.com"}, "info@example.com"},
	} {
		if got := tt.r.Original(); got != tt.want {
			t.Errorf("%+v.Original() = %q; want %q", tt.r, got, tt.want)
		}
	}
}

func TestRecipientNotify(t *testing.T) {
	kinds := []string{NotifySuccess, NotifyFailure, NotifyDelay}
	for _, tt := range []struct {
		notify []string
		want   [3]bool // success, failure, delay
	}{
		{nil, [3]bool{false, true, true}}, // RFC 3461 4.1: the default
		{[]string{}, [3]bool{false, true, true}},
		{[]string{NotifyNever}, [3]bool{false, false, false}},
		{[]string{NotifySuccess}, [3]bool{true, false, false}},
		{[]string{NotifyFailure, NotifyDelay}, [3]bool{false, true, true}},
		{[]string{"success", "failure"}, [3]bool{true, true, false}},
	} {
		r := Recipient{Address: "a@example.com", DSNNotify: tt.notify}
		for i, k := range kinds {
			if got := r.Notify(k); got != tt.want[i] {
				t.Errorf("NOTIFY=%v: Notify(%s) = %v; want %v", tt.notify, k, got, tt.want[i])
			}
		}
	}
}
