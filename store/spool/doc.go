// Package spool keeps message bodies on disk, one file per queue id (the
// "key"), and makes them durable before the queue rows that reference them are
// committed (DESIGN.md, "Durability rules").
//
// # Writing a body
//
//	w, err := sp.Create(ctx, key)     // temp file under incoming/
//	if err != nil { ... }             // errors.Is(err, ErrNoSpace): 452 4.3.1
//	defer w.Abort()                   // no-op once Commit has succeeded
//	_, err = io.Copy(w, data)         // buffered, 64 KiB
//	err = w.Commit()                  // durable when nil
//
// Commit flushes the buffer, fsyncs the file, moves it into place with
// renameat2(RENAME_NOREPLACE) (or link(2) and unlink(2) where the file system
// lacks that flag), and fsyncs the destination directory. Only when Commit
// returns nil is the body durable; when it returns an error neither the temp
// file nor the committed file is left behind, and the caller answers with a
// temporary error. A committed body is never replaced: committing a key that
// already exists fails with ErrExists and keeps the first body.
//
// Concurrent Commits into the same directory share directory fsyncs (group
// sync): each Commit returns only after an fsync of its directory that started
// after its own rename, and one fsync covers every rename made before it
// started. Options.NoGroupSync turns this off.
//
// # Layout
//
//	<dir>/incoming/<key>.<pid>.<seq>   bodies being written (not durable)
//	<dir>/q/<hh>/<key>                 committed bodies
//
// <hh> is two lower-case hex digits from an FNV-1a hash of the key, so there
// are 256 directories and each holds about 1/256 of the queue. The hash is
// part of the on-disk format: changing it strands existing bodies.
//
// # Recovery
//
// Files left in incoming/ by a crash are removed by SweepIncoming. Keys lists
// committed bodies with their modification times for the reconciler, which
// removes those that no committed queue row references ("Unknown COMMIT
// outcome" in DESIGN.md); the spool itself never decides that a body is
// unreferenced.
//
// # Fault injection
//
// Options.Hooks.Before, when set, is called before each step of a write
// (create, write, file fsync, rename or link, directory fsync) with the step
// and the key; an error it returns makes that step fail as if the system call
// had failed, including the mapping of ENOSPC and EDQUOT to ErrNoSpace. Tests
// here and end-to-end tests elsewhere use it to make any step fail. When
// Hooks.Before is nil the cost is one nil check per step.
//
// # Security
//
// The spool touches only files and directories under the directory given to
// Open: keys are checked (8 to 32 ASCII letters and digits) before they are
// used in a path, so no key can name a file elsewhere, and symbolic links are
// never created. Outside it, Open only fsyncs the parent directory after
// creating dir. Directories are created with mode 0700 and files with mode
// 0600, readable only by the user the process runs as. Bodies are untrusted
// data from the network: the spool stores and returns their bytes and never
// interprets them.
package spool
