// vcsim-dobaas: govmomi's vSphere simulator on a loopback port, with what Do'BaaS's tests need added:
// changed-block tracking (changeIds on snapshot disks, QueryChangedDiskAreas; see dobaas_cbt.go, compiled into
// package simulator through `go build -overlay`), a session check on the datastore /folder interface, read
// fault injection, and a fix for tasks on snapshots (pyvmomi rejects a Snapshot as a task's entity).
//
// Usage: vcsim-dobaas -model vpx|esx -user U -password P [-port 0] [-cert C -key K]
// Prints one JSON line on stdout once it listens: {"url": ..., "datastore_dir": ..., "pid": ...}; stops on SIGTERM.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// quiesceFails: VMs whose next quiesced snapshot fails (VMware Tools not answering), marked by the guard when
// their folder holds a file named "quiesce.fail".
var quiesceFails sync.Map

var (
	thisVM   = regexp.MustCompile(`<_this[^>]*type="VirtualMachine"[^>]*>([^<]+)</_this>`)
	quiesced = regexp.MustCompile(`<quiesce[^>]*>true</quiesce>`)
)

// hooks adjusts objects as the simulator registers them.
type hooks struct{}

func (hooks) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "DobaasHooks", Value: "hooks"}
}

func (hooks) PutObject(o mo.Reference) {
	switch x := o.(type) {
	case *simulator.Task:
		if x.Info.DescriptionId == "VirtualMachine.createSnapshot" && x.Info.Entity != nil {
			if _, fail := quiesceFails.LoadAndDelete(x.Info.Entity.Value); fail {
				x.Execute = func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
					return nil, &types.ApplicationQuiesceFault{}
				}
			}
		}
		// a task on a snapshot names the snapshot's VM as its entity, as vCenter does
		if e := x.Info.Entity; e != nil && e.Type == "VirtualMachineSnapshot" {
			if s, ok := simulator.Map.Get(*e).(*simulator.VirtualMachineSnapshot); ok {
				vm := s.Vm
				x.Info.Entity = &vm
				x.Info.EntityName = vm.Value
			}
		}
	case *simulator.VirtualMachineSnapshot:
		simulator.DobaasStampChangeIds(x)
	}
}

func (hooks) UpdateObject(mo.Reference, []types.PropertyChange) {}
func (hooks) RemoveObject(types.ManagedObjectReference)         {}

// guard answers 401 on /folder without a live session cookie, and fails reads at or past the offset written in
// "<file>.fail-after" (a test's way to break a backup midway).
func guard(svc *simulator.Service, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/sdk") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if bytes.Contains(body, []byte("CreateSnapshot_Task")) && quiesced.Match(body) {
				if m := thisVM.FindSubmatch(body); m != nil {
					ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: string(m[1])}
					if vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); ok {
						marker := path.Join(svc.DobaasDatastoreDir(nil), vm.Name, "quiesce.fail")
						if _, err := os.Stat(marker); err == nil {
							quiesceFails.Store(ref.Value, true)
						}
					}
				}
			}
		}
		if strings.HasPrefix(r.URL.Path, "/folder/") {
			c, err := r.Cookie(soap.SessionCookieName)
			if err != nil || !svc.DobaasValidSession(c.Value) {
				http.Error(w, "no valid session", http.StatusUnauthorized)
				return
			}
			if r.Method == http.MethodGet {
				p := svc.DobaasDatastoreDir(r.URL.Query()) + "/" + strings.TrimPrefix(r.URL.Path, "/folder/")
				if b, err := os.ReadFile(p + ".fail-after"); err == nil {
					limit, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
					var start int64
					fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &start)
					if start >= limit {
						http.Error(w, "injected read failure", http.StatusServiceUnavailable)
						return
					}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

func main() {
	model := flag.String("model", "vpx", "vpx (vCenter) or esx (a standalone host)")
	user := flag.String("user", "dobaas", "the only accepted user name")
	password := flag.String("password", "", "its password (required)")
	port := flag.Int("port", 0, "loopback port (0: any free port)")
	certFile := flag.String("cert", "", "PEM certificate to serve (default: Go's built-in localhost one)")
	keyFile := flag.String("key", "", "its PEM private key")
	machines := flag.Int("machines", 0, "VMs per host and per cluster resource pool (default: the model's 2)")
	flag.Parse()
	if *password == "" {
		fmt.Fprintln(os.Stderr, "-password is required")
		os.Exit(2)
	}

	var m *simulator.Model
	switch *model {
	case "vpx":
		m = simulator.VPX()
	case "esx":
		m = simulator.ESX()
	default:
		fmt.Fprintf(os.Stderr, "unknown model %q\n", *model)
		os.Exit(2)
	}
	if *machines > 0 {
		m.Machine = *machines
	}
	if err := m.Create(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer m.Remove()
	simulator.Map.AddHandler(hooks{})

	m.Service.Listen = &url.URL{Host: fmt.Sprintf("127.0.0.1:%d", *port), User: url.UserPassword(*user, *password)}
	m.Service.TLS = new(tls.Config)
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		m.Service.TLS.Certificates = []tls.Certificate{pair}
	}
	s := m.Service.NewServer()
	defer s.Close()
	s.Server.Config.Handler = guard(m.Service, s.Server.Config.Handler)

	u := *s.URL
	u.User = nil
	out, _ := json.Marshal(map[string]interface{}{
		"url": u.String(), "host": u.Host, "pid": os.Getpid(), "datastore_dir": m.Service.DobaasDatastoreDir(nil),
	})
	fmt.Println(string(out))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
