package suite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/esflow/esflow/internal/proctest"
)

// Service is one replica of a command under the suite's control, with an
// orchestrator's habit: a process that exits without being told to is
// counted, and started again.
type Service struct {
	name     string
	cmd      proctest.Command
	httpAddr string

	mu         sync.Mutex
	cur        *incarnation
	closed     bool
	starts     int
	unexpected []string // exit errors and output tails of unexpected exits
}

type incarnation struct {
	p        *proctest.Process
	expected bool // set (under service.mu) before the suite kills or stops it
}

// NewService returns a service running cmd, serving HTTP on httpAddr;
// call Start.
func NewService(name string, cmd proctest.Command, httpAddr string) *Service {
	cmd.Name = name
	return &Service{name: name, cmd: cmd, httpAddr: httpAddr}
}

// Addr is the service's HTTP address (host:port).
func (s *Service) Addr() string { return s.httpAddr }

// Name labels the service.
func (s *Service) Name() string { return s.name }

// Start starts a new incarnation.
func (s *Service) Start() error {
	p, err := proctest.StartCommand(s.cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	inc := &incarnation{p: p}
	s.mu.Lock()
	s.cur = inc
	s.starts++
	s.mu.Unlock()
	go s.watch(inc)
	return nil
}

func (s *Service) watch(inc *incarnation) {
	<-inc.p.Done()
	s.mu.Lock()
	if inc.expected || s.closed || s.cur != inc {
		s.mu.Unlock()
		return
	}
	s.unexpected = append(s.unexpected, fmt.Sprintf("%s exited (%v): %s", s.name, inc.p.Err(), proctest.Tail(inc.p.Output(), 1500)))
	s.mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	s.mu.Lock()
	restart := !s.closed && s.cur == inc
	s.mu.Unlock()
	if restart {
		_ = s.Start()
	}
}

// current marks the running incarnation as about to be ended by the suite.
func (s *Service) current() *incarnation {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		s.cur.expected = true
	}
	return s.cur
}

// Kill9 kills the running incarnation with SIGKILL and waits for it.
func (s *Service) Kill9() error {
	inc := s.current()
	if inc == nil {
		return nil
	}
	_ = inc.p.Signal(syscall.SIGKILL)
	select {
	case <-inc.p.Done():
		return nil
	case <-time.After(15 * time.Second):
		return fmt.Errorf("%s: still running 15s after SIGKILL", s.name)
	}
}

// Terminate stops the running incarnation with SIGTERM, as an
// orchestrator does in a rolling restart, and waits for it to exit (at
// most timeout; then it is killed).
func (s *Service) Terminate(timeout time.Duration) error {
	inc := s.current()
	if inc == nil {
		return nil
	}
	return inc.p.Stop(timeout)
}

// Signal sends sig to the running incarnation (SIGSTOP, SIGCONT).
func (s *Service) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	inc := s.cur
	s.mu.Unlock()
	if inc == nil {
		return errors.New(s.name + ": not running")
	}
	return inc.p.Signal(sig)
}

// Output returns what the running incarnation printed.
func (s *Service) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return ""
	}
	return s.cur.p.Output()
}

// Close stops the service with SIGTERM (SIGKILL after a timeout).
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	inc := s.cur
	if inc != nil {
		inc.expected = true
	}
	s.mu.Unlock()
	if inc != nil {
		_ = inc.p.Signal(syscall.SIGCONT) // a paused process cannot handle SIGTERM
		_ = inc.p.Stop(10 * time.Second)
	}
}

// Unexpected returns the unexpected exits so far.
func (s *Service) Unexpected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.unexpected...)
}

// WaitHTTP waits until GET http://addr/path answers 200.
func (s *Service) WaitHTTP(ctx context.Context, path string, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.httpAddr+path, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: GET %s not 200 within %s: %v\n%s", s.name, path, timeout, last, proctest.Tail(s.Output(), 2000))
}

// WaitOutput waits until the running incarnation has printed substr at
// least n times.
func (s *Service) WaitOutput(ctx context.Context, substr string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for strings.Count(s.Output(), substr) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %q printed fewer than %d times within %s\n%s", s.name, substr, n, timeout, proctest.Tail(s.Output(), 2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}
