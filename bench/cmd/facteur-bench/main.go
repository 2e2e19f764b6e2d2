// Command facteur-bench is the measuring half of bench/run.sh, the
// side-by-side benchmark of facteur against Postfix (see bench/README.md).
//
//	facteur-bench gen     generate the same data set for both databases
//	facteur-bench run     drive one MTA for one case and measure it
//	facteur-bench idle    hold many idle SMTP connections and measure RSS
//	facteur-bench report  turn the run records into the markdown table
//
// It is a manual tool: nothing in CI runs it. Every load it makes targets a
// loopback address and stops by itself (a message count and a timeout).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = cmdGen(os.Args[2:])
	case "run":
		err = cmdRun(os.Args[2:])
	case "idle":
		err = cmdIdle(os.Args[2:])
	case "report":
		err = cmdReport(os.Args[2:])
	case "prep":
		err = cmdPrep(os.Args[2:])
	case "proc":
		err = cmdProc(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "facteur-bench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: facteur-bench gen|prep|run|idle|report|proc [flags] (see bench/README.md)")
	os.Exit(2)
}
