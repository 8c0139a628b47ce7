// Command child is the subprocess of package proctest's own tests: it
// prints its arguments and PROCTEST_VALUE, serves GET / on -http (if
// given), and exits 0 on SIGTERM unless -ignore-term.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	addr := flag.String("http", "", "address to serve on")
	ignore := flag.Bool("ignore-term", false, "ignore SIGTERM")
	flag.Parse()
	sig := make(chan os.Signal, 1)
	if *ignore {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sig, syscall.SIGTERM)
	}
	fmt.Printf("args %v value %q inherited %q\n", flag.Args(), os.Getenv("PROCTEST_VALUE"), os.Getenv("PROCTEST_DROPPED"))
	if *addr != "" {
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		go func() { _ = http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }()
	}
	fmt.Fprintln(os.Stderr, "child ready")
	<-sig
	fmt.Println("bye")
}
