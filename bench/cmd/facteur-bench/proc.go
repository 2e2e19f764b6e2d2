package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on every
// Linux architecture Go runs on).
const clockTicks = 100

type procStat struct {
	pid, ppid int
	comm      string
	// utime+stime, and cutime+cstime (the waited-for children's times,
	// their own children included).
	self, children uint64
}

// readProcs reads /proc/*/stat.
func readProcs() map[int]procStat {
	ents, _ := os.ReadDir("/proc")
	out := make(map[int]procStat, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out[pid] = st
		}
	}
	return out
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	// comm is in parentheses and may hold spaces: split after the last ')'.
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return procStat{}, false
	}
	f := strings.Fields(string(b[j+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 15 {
		return procStat{}, false
	}
	num := func(n int) uint64 { v, _ := strconv.ParseUint(f[n-3], 10, 64); return v }
	return procStat{pid: pid, ppid: int(num(4)), comm: string(b[i+1 : j]),
		self: num(14) + num(15), children: num(16) + num(17)}, true
}

// tree returns root and its descendants.
func tree(procs map[int]procStat, root int) []procStat {
	kids := map[int][]int{}
	for pid, p := range procs {
		kids[p.ppid] = append(kids[p.ppid], pid)
	}
	var out []procStat
	var walk func(int)
	walk = func(pid int) {
		p, ok := procs[pid]
		if !ok {
			return
		}
		out = append(out, p)
		for _, k := range kids[pid] {
			walk(k)
		}
	}
	walk(root)
	return out
}

// treeTicks is the CPU time (ticks) that root's tree has used so far: the
// live processes' own times plus what they collected from reaped children.
// A process that exits between two readings moves its time into its
// parent's cutime/cstime, so a difference of two readings counts it.
func treeTicks(root int) (uint64, int) {
	if root <= 0 {
		return 0, 0
	}
	var t uint64
	ps := tree(readProcs(), root)
	for _, p := range ps {
		t += p.self + p.children
	}
	return t, len(ps)
}

// memInfo is one process's memory, in KiB.
type memInfo struct{ rss, hwm, pss uint64 }

func readMem(pid int, withPSS bool) memInfo {
	var m memInfo
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "VmRSS:"):
				m.rss = kib(l)
			case strings.HasPrefix(l, "VmHWM:"):
				m.hwm = kib(l)
			}
		}
	}
	if withPSS {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "Pss:") {
					m.pss = kib(l)
				}
			}
		}
	}
	return m
}

func kib(line string) uint64 {
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0
	}
	v, _ := strconv.ParseUint(f[1], 10, 64)
	return v
}

// treeMem sums the memory of root's tree.
func treeMem(root int, withPSS bool) (m memInfo) {
	if root <= 0 {
		return
	}
	for _, p := range tree(readProcs(), root) {
		x := readMem(p.pid, withPSS)
		m.rss += x.rss
		m.hwm += x.hwm
		m.pss += x.pss
	}
	return m
}

// resetHWM resets the peak RSS (VmHWM) of root's tree (clear_refs 5).
func resetHWM(root int) {
	if root <= 0 {
		return
	}
	for _, p := range tree(readProcs(), root) {
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.pid), []byte("5"), 0) //nolint:errcheck
	}
}

// pidFromFile reads a pid file (PostgreSQL's postmaster.pid, Postfix's
// master.pid: the pid is the first field).
func pidFromFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty", path)
	}
	return strconv.Atoi(f[0])
}

// cmdProc prints the CPU ticks and memory of a process tree (for the script).
func cmdProc(args []string) error {
	fs := flag.NewFlagSet("proc", flag.ExitOnError)
	pid := fs.Int("pid", 0, "root pid")
	pidfile := fs.String("pidfile", "", "or a pid file")
	fs.Parse(args)
	if *pidfile != "" {
		p, err := pidFromFile(*pidfile)
		if err != nil {
			return err
		}
		*pid = p
	}
	t, n := treeTicks(*pid)
	m := treeMem(*pid, true)
	var names []string
	for _, p := range tree(readProcs(), *pid) {
		names = append(names, filepath.Base(p.comm))
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"pid": *pid, "procs": n, "cpu_s": float64(t) / clockTicks,
		"rss_kib": m.rss, "hwm_kib": m.hwm, "pss_kib": m.pss, "comms": names})
}

// treeTicksBy is treeTicks split by what each process is, from its title:
// PostgreSQL names its processes "postgres: <user> <db> …" (backends) and
// "postgres: walwriter" etc.; the root's reaped children are "exited".
func treeTicksBy(root int) map[string]uint64 {
	out := map[string]uint64{}
	if root <= 0 {
		return out
	}
	for _, p := range tree(readProcs(), root) {
		k := procKind(p.pid)
		if p.pid == root {
			out["postmaster"] += p.self
			out["exited"] += p.children
			continue
		}
		out[k] += p.self + p.children
	}
	return out
}

func procKind(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "?"
	}
	t := strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
	t = strings.TrimPrefix(t, "postgres: ")
	f := strings.Fields(t)
	switch {
	case len(f) >= 3 && (strings.HasPrefix(f[2], "[") || strings.Contains(t, "[local]")):
		return "backend " + f[1] // user db [local] state
	case len(f) >= 2 && f[0] == "autovacuum" && f[1] == "worker":
		return "autovacuum worker"
	case len(f) > 0:
		return strings.Join(f[:min(2, len(f))], " ")
	}
	return "?"
}
