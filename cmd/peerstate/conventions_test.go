package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/univrs/peerstate/api"
)

func TestCLI_Conventions(t *testing.T) {
	d := startDaemon(t, env{}, "--backend", "memory", "--data", t.TempDir())
	noEnv := env{}

	// Global flags before the command; flags after the arguments; "--"
	// for an argument that starts with "-".
	if r := execute(t, noEnv, "", "--api", d.addr, "put", "/c/a", "1").want(t, exitOK, ""); r.stdout != "1\n" {
		t.Fatalf("put with --api before the command: %q", r.stdout)
	}
	if r := execute(t, noEnv, "", "get", "/c/a", "--api", d.addr, "--json").want(t, exitOK, ""); !strings.Contains(r.stdout, `"value":"1"`) {
		t.Fatalf("get with flags after the key: %q", r.stdout)
	}
	execute(t, d.env, "", "put", "--", "/c/dash", "-x").want(t, exitOK, "")
	if r := execute(t, d.env, "", "get", "/c/dash").want(t, exitOK, ""); r.stdout != "-x" {
		t.Fatalf("value after --: %q", r.stdout)
	}

	// del says what it did; del --prefix deletes a subtree and counts it.
	if r := execute(t, d.env, "", "del", "/c/dash").want(t, exitOK, ""); r.stdout != "deleted /c/dash\n" {
		t.Fatalf("del printed %q", r.stdout)
	}
	for _, k := range []string{"/tree/a", "/tree/b/c", "/treehouse"} {
		execute(t, d.env, "", "put", k, "v").want(t, exitOK, "")
	}
	if r := execute(t, d.env, "", "del", "--prefix", "/tree").want(t, exitOK, ""); r.stdout != "deleted 2 keys\n" {
		t.Fatalf("del --prefix printed %q", r.stdout)
	}
	execute(t, d.env, "", "get", "/tree/b/c").want(t, exitNotFound, "")
	execute(t, d.env, "", "get", "/treehouse").want(t, exitOK, "")

	// get --prefix prints keys and values, in order.
	execute(t, d.env, "\xff", "put", "/treehouse/bin", "-").want(t, exitOK, "")
	if r := execute(t, d.env, "", "get", "--prefix", "/treehouse").want(t, exitOK, ""); r.stdout != "/treehouse\nv\n/treehouse/bin\nbase64:/w==\n" {
		t.Fatalf("get --prefix = %q", r.stdout)
	}

	// A bad key is a usage mistake (2), named once and cut short, without
	// the internal package layers.
	long := "/" + strings.Repeat("k", 2000) + "/"
	r := execute(t, d.env, "", "get", long).want(t, exitUsage, "")
	if len(r.stderr) > 300 || strings.Contains(r.stderr, "datastore:") || strings.Contains(r.stderr, "replica:") {
		t.Fatalf("bad key error: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, "(2002 bytes)") {
		t.Fatalf("bad key error does not give the key's length: %q", r.stderr)
	}
	execute(t, d.env, `{"ops": [`, "txn").want(t, exitUsage, "")

	// version --json; help writes flags as --name.
	var v map[string]string
	if r := execute(t, noEnv, "", "version", "--json").want(t, exitOK, ""); json.Unmarshal([]byte(r.stdout), &v) != nil || v["version"] == "" || v["go"] == "" {
		t.Fatalf("version --json = %q", r.stdout)
	}
	if r := execute(t, noEnv, "", "help", "get").want(t, exitOK, ""); !strings.Contains(r.stdout, "  --api string") || strings.Contains(r.stdout, "\n  -api") {
		t.Fatalf("help get:\n%s", r.stdout)
	}
}

func TestCLI_ConfigFormatsAndTokenFile(t *testing.T) {
	dir := t.TempDir()
	// YAML: keys as in the other formats, a list as a sequence.
	yaml := filepath.Join(dir, "peerstate.yaml")
	body := "backend: memory\ntoken: from-yaml\nlog_level: warn\nwrite-rule:\n  - /open/=anyone\n  - /peers/=owner\n"
	if err := os.WriteFile(yaml, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, env{}, "--config", yaml)
	execute(t, d.env, "", "status").want(t, exitError, "unauthorized")
	var st api.Status
	r := execute(t, env{"PEERSTATE_API": d.addr, "PEERSTATE_TOKEN": "from-yaml"}, "", "status", "--json").want(t, exitOK, "")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Backend != "memory" {
		t.Fatalf("status with the YAML file's settings: %q, %v", r.stdout, err)
	}
	d.stop(t)
	if strings.Contains(d.stderr.String(), "level=INFO") {
		t.Fatalf("log_level warn from the YAML file not applied:\n%s", d.stderr)
	}
	for _, tc := range []struct{ name, body, msg string }{
		{"peerstate.yml", "log:\n  level: debug\n", `key "log": a table is not a setting`},
		{"peerstate.yml", "api: [a, b]\n", `key "api": one value wanted, not a list`},
		{"peerstate.yaml", "backend: [memory\n", "peerstate.yaml"},
		{"peerstate.ini", "backend = memory\n", ".ini files are not read"},
	} {
		file := filepath.Join(dir, tc.name)
		if err := os.WriteFile(file, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		execute(t, env{}, "", "run", "--config", file).want(t, exitError, tc.msg)
	}

	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d = startDaemon(t, env{}, "--backend", "memory", "--data", t.TempDir(), "--token-file", tokenFile)
	execute(t, env{}, "", "put", "--api", d.addr, "/t", "1").want(t, exitError, "unauthorized")
	execute(t, env{}, "", "put", "--api", d.addr, "--token-file", tokenFile, "/t", "1").want(t, exitOK, "")
	execute(t, env{"PEERSTATE_TOKEN_FILE": tokenFile}, "", "get", "--api", d.addr, "/t").want(t, exitOK, "")
}

func TestCLI_Completion(t *testing.T) {
	r := execute(t, env{}, "", "completion", "bash").want(t, exitOK, "")
	script := filepath.Join(t.TempDir(), "peerstate.bash")
	if err := os.WriteFile(script, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("no bash to try the script in: %v", err)
	}
	probe := `source "$1"
COMP_WORDS=(peerstate bac); COMP_CWORD=1; _peerstate; echo "${COMPREPLY[*]}"
COMP_WORDS=(peerstate get --j); COMP_CWORD=2; _peerstate; echo "${COMPREPLY[*]}"`
	out, err := exec.Command(bash, "-c", probe, "bash", script).CombinedOutput()
	if err != nil || string(out) != "backup\n--json\n" {
		t.Fatalf("completion: %q, %v", out, err)
	}
	execute(t, env{}, "", "completion", "fish").want(t, exitUsage, `shell "fish"`)
}

// TestCLI_SettingsNamedAsFlags: a config file's keys are the flags' names
// (with "-" or "_"), lists are arrays; a variable is PEERSTATE_ and the
// flag's name; mistakes name the key or variable.
func TestCLI_SettingsNamedAsFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "peerstate.json")
	data := filepath.Join(dir, "from-file")
	body := `{"backend": "sqlite", "data": "` + data + `", "log-level": "warn", "log_format": "json",
		"listen": ["/ip4/127.0.0.1/tcp/0"], "mdns": false}`
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, env{}, "--config", cfg)
	d.stop(t)
	if _, err := os.Stat(filepath.Join(data, "state.db")); err != nil {
		t.Fatalf("the file's data directory was not used: %v", err)
	}
	if strings.Contains(d.stderr.String(), "level=INFO") || strings.Contains(d.stderr.String(), `"level":"INFO"`) {
		t.Fatalf("log-level warn from the file not applied:\n%s", d.stderr)
	}

	if err := os.WriteFile(cfg, []byte(`{"api": ["a", "b"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	execute(t, env{}, "", "run", "--config", cfg).want(t, exitError, `key "api": one value wanted`)
	execute(t, env{"PEERSTATE_DHT": "sometimes"}, "", "run").want(t, exitUsage, `PEERSTATE_DHT="sometimes"`)
}
