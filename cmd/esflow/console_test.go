package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds a Chromium to drive; without one the test skips,
// unless CI=true (.ci/run installs Debian's chromium).
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH")
	return ""
}

// TestConsoleInChromium loads the operations console in a real headless
// Chromium against the running embedded stack (store, relay, broker,
// projectors), writes events through the API and waits for the page to
// show them: the appended-rate chart's data, the relay chart, the
// projections' applied counts and per-partition lag series, the stream
// browser with pretty-printed payloads and a verified hash chain, and the
// notification log with decoded payloads, and a re-drive. Every wait is for a condition
// on the page, bounded by the test's deadline. With
// ESFLOW_CONSOLE_SCREENSHOT=path it saves a screenshot of the console.
func TestConsoleInChromium(t *testing.T) {
	chromium := chromiumPath(t)
	timeout := 3 * time.Minute
	if os.Getenv("ESFLOW_CONSOLE_SCREENSHOT") != "" {
		timeout += 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := []string{"-data", t.TempDir(), "-http-addr", "127.0.0.1:0", "-broker-addr", "127.0.0.1:0"}
	ep, _, stop := start(t, ctx, args, func(string) string { return "" })
	defer stop()

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1700),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true))
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	wait := func(what, js string) {
		t.Helper()
		// No timeout of its own: the test's deadline bounds the wait.
		if _, err := chromedp.Run(browser, chromedp.Poll[bool](js, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(0))); err != nil {
			state, _ := chromedp.Run(browser, chromedp.Evaluate[string](`JSON.stringify({samples: window.esflowConsole && window.esflowConsole.samples.slice(-2), body: document.body.innerText.slice(0, 3000)})`))
			t.Fatalf("waiting for %s: %v\npage state: %s", what, err, state)
		}
	}

	if err := chromedp.Do(browser, chromedp.Navigate(ep.HTTP+"/")); err != nil {
		t.Fatal(err)
	}
	wait("the first sample", `window.esflowConsole && window.esflowConsole.samples.length >= 1`)

	// Write through the API while the page watches.
	var world struct{ ID string }
	if s := do(t, http.MethodPost, ep.HTTP+"/v1/worlds", `{"ruler":"gaia"}`, &world); s != http.StatusCreated {
		t.Fatalf("create: %d", s)
	}
	for i := range 5 {
		if s := do(t, http.MethodPost, ep.HTTP+"/v1/worlds/"+world.ID+"/make-it-so", fmt.Sprintf(`{"what":"thing %d"}`, i), nil); s != http.StatusOK {
			t.Fatalf("make-it-so: %d", s)
		}
	}
	ledger := "8d0c1d5e-2f44-4a51-9a0b-6c1f3e2d4b7a"
	if s := do(t, http.MethodPost, ep.HTTP+"/v1/streams/"+ledger+"/events",
		`{"expected_version":0,"aggregate_type":"Ledger","events":[{"type":"Opened","data":{"owner":"ann","limits":{"daily":100}}}]}`, nil); s != http.StatusCreated {
		t.Fatalf("generic append: %d", s)
	}

	// Live charts: the appended rate saw the writes, the relay published them.
	wait("the appended-rate chart to plot the writes", `(() => {
		const s = window.esflowConsole.series["appended/s"] || [];
		const line = document.querySelector('#chart-appended polyline[data-series="appended/s"]');
		return line !== null && s.some(p => p[1] > 0) && window.esflowConsole.samples.at(-1).last_notification === 7;
	})()`)
	wait("the relay chart to show the backlog drained and publishing", `(() => {
		const last = window.esflowConsole.samples.at(-1);
		const pub = window.esflowConsole.series["published/s"] || [];
		return last.backlog === 0 && last.published === 7 && pub.some(p => p[1] > 0) &&
			document.querySelector('#chart-relay polyline[data-series="backlog"]') !== null;
	})()`)
	// Projections: the worlds projection applied the six World events and
	// its lag series per partition is plotted.
	wait("the worlds projection's applied count and lag series", `(() => {
		const row = document.querySelector('#projections tr[data-projection="worlds"]');
		const lines = document.querySelectorAll('#chart-lag polyline[data-series^="worlds esflow.World/"]');
		return row !== null && Number(row.dataset.applied) >= 6 && Number(row.dataset.lag) === 0 && lines.length >= 1;
	})()`)
	lagPoints, err := chromedp.Run(browser, chromedp.Evaluate[int](`Math.max(...Object.entries(window.esflowConsole.series).filter(([k]) => k.startsWith("worlds ")).map(([, v]) => v.length))`))
	if err != nil {
		t.Fatal(err)
	}

	// Stream browser: find the world by id, see its events pretty-printed,
	// verify its chain.
	if err := chromedp.Do(browser, chromedp.SetValue(chromedp.ID("q"), world.ID), chromedp.Click(chromedp.CSS("#search button"))); err != nil {
		t.Fatal(err)
	}
	wait("the world's six events in the stream browser", `(() => {
		const rows = document.querySelectorAll('#stream-events tbody tr');
		const text = document.getElementById('stream-events').textContent;
		return rows.length === 6 && text.includes('"what": "thing 4"') && document.getElementById('head-hash').textContent.length > 10;
	})()`)
	if err := chromedp.Do(browser, chromedp.Click(chromedp.ID("verify"))); err != nil {
		t.Fatal(err)
	}
	wait("the hash chain verified", `document.getElementById('verify-result').textContent.startsWith('ok: 6 events chain to ' + document.getElementById('head-hash').textContent.slice(0, 16))`)

	// Search by type: the generic Ledger stream, its nested payload pretty-printed.
	if err := chromedp.Do(browser, chromedp.SetValue(chromedp.ID("q"), "Ledger"), chromedp.Click(chromedp.CSS("#search button"))); err != nil {
		t.Fatal(err)
	}
	wait("the Ledger stream found by type", `(() => {
		const r = document.querySelector('#stream-results tr[data-stream="`+ledger+`"]');
		return r !== null && document.getElementById('stream-id').textContent === "`+ledger+`" &&
			document.getElementById('stream-events').textContent.includes('"limits": {\n    "daily": 100\n  }');
	})()`)

	// The notification log shows the latest notifications, decoded.
	wait("the notification log", `(() => {
		const r = document.querySelector('#log tr[data-notification="7"]');
		return r !== null && r.textContent.includes('"owner": "ann"') && document.querySelectorAll('#log tbody tr').length === 7;
	})()`)

	// More writes: the projection's lag and applied count move on.
	for i := range 3 {
		if s := do(t, http.MethodPost, ep.HTTP+"/v1/worlds/"+world.ID+"/make-it-so", fmt.Sprintf(`{"what":"more %d"}`, i), nil); s != http.StatusOK {
			t.Fatalf("make-it-so: %d", s)
		}
	}
	wait("the projection's applied count and lag series to update", fmt.Sprintf(`(() => {
		const row = document.querySelector('#projections tr[data-projection="worlds"]');
		const n = Math.max(...Object.entries(window.esflowConsole.series).filter(([k]) => k.startsWith("worlds ")).map(([, v]) => v.length));
		return row !== null && Number(row.dataset.applied) >= 9 && Number(row.dataset.lag) === 0 && n > %d;
	})()`, lagPoints))
	wait("the log to follow", `document.querySelector('#log tr[data-notification="10"]') !== null`)

	// Re-drive from the projections table (no token configured here).
	if err := chromedp.Do(browser, chromedp.Click(chromedp.CSS(`#projections tr[data-projection="worlds"] button`))); err != nil {
		t.Fatal(err)
	}
	wait("the re-drive's result", `document.getElementById('redrive-result').textContent === "worlds: re-driven 0, skipped 0, still failing 0"`)

	if path := os.Getenv("ESFLOW_CONSOLE_SCREENSHOT"); path != "" {
		// Some uneven traffic, so the charts have something to show.
		for i := range 45 {
			for j := range (i*7)%11 + 1 {
				do(t, http.MethodPost, ep.HTTP+"/v1/worlds/"+world.ID+"/make-it-so", fmt.Sprintf(`{"what":"load %d.%d"}`, i, j), nil)
			}
			time.Sleep(time.Second)
		}
		if err := chromedp.Do(browser, chromedp.SetValue(chromedp.ID("q"), world.ID), chromedp.Click(chromedp.CSS("#search button"))); err != nil {
			t.Fatal(err)
		}
		wait("the world's stream", `document.querySelectorAll('#stream-events tbody tr').length > 100`)
		if err := chromedp.Do(browser, chromedp.Click(chromedp.ID("verify"))); err != nil {
			t.Fatal(err)
		}
		wait("the hash chain verified", `document.getElementById('verify-result').textContent.startsWith('ok')`)
		png, err := chromedp.Run(browser, chromedp.FullScreenshot(100)) // quality 100: PNG
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := chromedp.Run(browser, chromedp.Evaluate[string](`document.getElementById('conn').textContent`))
	if err != nil || !strings.HasPrefix(conn, "live") {
		t.Fatalf("console connection state %q: %v", conn, err)
	}
}

// TestConsoleRedriveNeedsToken: the console's re-drive changes state, so
// with WRITER_TOKEN set it needs the bearer token; with it, the real
// projector re-drives (nothing is dead here, so nothing is applied), and
// an unknown projection is a 404.
func TestConsoleRedriveNeedsToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"-data", t.TempDir(), "-http-addr", "127.0.0.1:0", "-broker-addr", "127.0.0.1:0"}
	ep, _, stop := start(t, ctx, args, func(k string) string {
		if k == "WRITER_TOKEN" {
			return "s3cret"
		}
		return ""
	})
	defer stop()
	post := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ep.HTTP+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, res.Body)
		return res.StatusCode, b.String()
	}
	if code, body := post("/v1/console/projections/worlds/redrive", ""); code != http.StatusUnauthorized {
		t.Fatalf("without token: %d %s", code, body)
	}
	if code, body := post("/v1/console/projections/worlds/redrive", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d %s", code, body)
	}
	if code, body := post("/v1/console/projections/worlds/redrive", "s3cret"); code != http.StatusOK || !strings.Contains(body, `"applied":0`) {
		t.Fatalf("with token: %d %s", code, body)
	}
	if code, body := post("/v1/console/projections/nope/redrive", "s3cret"); code != http.StatusNotFound {
		t.Fatalf("unknown projection: %d %s", code, body)
	}
}
