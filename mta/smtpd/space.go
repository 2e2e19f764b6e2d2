package smtpd

import (
	"fmt"

	"github.com/facteur/facteur/mta/envelope"
)

// FreeSpaceCheck returns an Options.SpaceCheck over free, the free space of
// the spool's file system in bytes (store/spool's Spool.Free). As Postfix's
// smtpd does with queue_minfree, MAIL is refused with 452 4.3.1 (envelope.
// StorageFull) when the free space is at most minFree, or when the
// announced size does not fit above minFree or in half of what is free; a
// free space that cannot be read refuses it the same way (storage
// unwritable, DESIGN). minFree 0 checks only the size.
func FreeSpaceCheck(free func() (uint64, error), minFree uint64) func(size int64) error {
	return func(size int64) error {
		n, err := free()
		if err != nil {
			return fmt.Errorf("%w: %w", envelope.StorageFull(), err)
		}
		need := uint64(max(size, 0))
		if n <= minFree || need >= n-minFree || (need > 0 && need >= n/2) {
			return fmt.Errorf("%w: spool has %d bytes free, minimum %d, message size %d",
				envelope.StorageFull(), n, minFree, need)
		}
		return nil
	}
}
