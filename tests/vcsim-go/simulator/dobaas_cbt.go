// Added to govmomi's package simulator at build time (go build -overlay): changed-block tracking as vSphere
// exposes it, driven by a sidecar file the tests write next to a disk's flat file when they change it:
//
//	<disk>-flat.vmdk.cbt.json  {"epoch": "any text", "changes": [[offset, length], ...]}
//
// A disk's changeId is "<epoch>/<number of changes>"; a snapshot records the changeIds of its disks when it is
// taken. QueryChangedDiskAreas(snapshot, deviceKey, startOffset, changeId) answers the areas changed between
// changeId and the snapshot, or with "*" the allocated areas; a changeId of another epoch (a CBT reset) or from
// the future is refused, as ESXi refuses an invalid one. Answers cover at most DOBAAS_CBT_WINDOW bytes (default
// 16 MiB) from startOffset, so clients must loop as they must with ESXi.
package simulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type dobaasSidecar struct {
	Epoch   string     `json:"epoch"`
	Changes [][2]int64 `json:"changes"`
}

func dobaasWindow() int64 {
	if v, err := strconv.ParseInt(os.Getenv("DOBAAS_CBT_WINDOW"), 10, 64); err == nil && v > 0 {
		return v
	}
	return 16 << 20
}

// DobaasDatastoreDir is the local directory behind the datastore a /folder query names (nil: the first one).
func (s *Service) DobaasDatastoreDir(q url.Values) string {
	if q == nil {
		if ds, ok := Map.Any("Datastore").(*Datastore); ok {
			return ds.Info.GetDatastoreInfo().Url
		}
		return ""
	}
	ds, err := s.findDatastore(q)
	if err != nil {
		return ""
	}
	return ds.Info.GetDatastoreInfo().Url
}

// DobaasValidSession tells whether a session cookie belongs to a logged-in session.
func (s *Service) DobaasValidSession(id string) bool {
	_, ok := s.sm.getSession(id)
	return ok
}

func dobaasFlatPath(vm *VirtualMachine, fileName string) (string, bool) {
	p, fault := parseDatastorePath(fileName)
	if fault != nil {
		return "", false
	}
	ds := vm.findDatastore(p.Datastore)
	if ds == nil {
		return "", false
	}
	return path.Join(ds.Info.GetDatastoreInfo().Url, strings.TrimSuffix(p.Path, ".vmdk")+"-flat.vmdk"), true
}

func dobaasReadSidecar(flat string) dobaasSidecar {
	sc := dobaasSidecar{Epoch: "initial"}
	if b, err := os.ReadFile(flat + ".cbt.json"); err == nil {
		_ = json.Unmarshal(b, &sc)
	}
	return sc
}

// DobaasStampChangeIds gives a new snapshot its own copy of the disk devices, each with the disk's changeId now.
func DobaasStampChangeIds(s *VirtualMachineSnapshot) {
	vm, ok := Map.Get(s.Vm).(*VirtualMachine)
	if !ok || s.Config.ChangeTrackingEnabled == nil || !*s.Config.ChangeTrackingEnabled {
		return
	}
	devices := make([]types.BaseVirtualDevice, len(s.Config.Hardware.Device))
	copy(devices, s.Config.Hardware.Device)
	for i, d := range devices {
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		flat, ok := dobaasFlatPath(vm, b.FileName)
		if !ok {
			continue
		}
		sc := dobaasReadSidecar(flat)
		nd, nb := *disk, *b
		nb.ChangeId = fmt.Sprintf("%s/%d", sc.Epoch, len(sc.Changes))
		nd.Backing = &nb
		devices[i] = &nd
	}
	s.Config.Hardware.Device = devices
}

func dobaasFault(msg string) soap.HasFault {
	return &methods.QueryChangedDiskAreasBody{Fault_: Fault(msg, &types.InvalidArgument{InvalidProperty: msg})}
}

// allocated areas of a sparse file (SEEK_DATA / SEEK_HOLE), within [from, to)
func dobaasAllocated(flat string, from, to int64) ([][2]int64, error) {
	f, err := os.Open(flat)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][2]int64
	pos := from
	for pos < to {
		start, err := f.Seek(pos, 3) // SEEK_DATA
		if err != nil || start >= to {
			break
		}
		end, err := f.Seek(start, 4) // SEEK_HOLE
		if err != nil {
			return nil, err
		}
		if end > to {
			end = to
		}
		out = append(out, [2]int64{start, end - start})
		pos = end
	}
	_, _ = f.Seek(0, io.SeekStart)
	return out, nil
}

func (vm *VirtualMachine) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	if req.Snapshot == nil {
		return dobaasFault("snapshot is required")
	}
	snap, ok := Map.Get(*req.Snapshot).(*VirtualMachineSnapshot)
	if !ok || snap.Vm != vm.Self {
		return dobaasFault("snapshot does not belong to this virtual machine")
	}
	if snap.Config.ChangeTrackingEnabled == nil || !*snap.Config.ChangeTrackingEnabled {
		return &methods.QueryChangedDiskAreasBody{Fault_: Fault("change tracking is not enabled",
			&types.NotSupported{})}
	}
	var disk *types.VirtualDisk
	for _, d := range snap.Config.Hardware.Device {
		if vd, ok := d.(*types.VirtualDisk); ok && vd.Key == req.DeviceKey {
			disk = vd
		}
	}
	if disk == nil {
		return dobaasFault("deviceKey")
	}
	b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok || b.ChangeId == "" {
		return dobaasFault("the disk has no changeId")
	}
	flat, ok := dobaasFlatPath(vm, b.FileName)
	if !ok {
		return dobaasFault("disk file")
	}
	capacity := disk.CapacityInBytes
	if capacity == 0 {
		capacity = disk.CapacityInKB * 1024
	}
	if req.StartOffset < 0 || req.StartOffset >= capacity {
		return dobaasFault("startOffset")
	}
	end := req.StartOffset + dobaasWindow()
	if end > capacity {
		end = capacity
	}
	var areas [][2]int64
	if req.ChangeId == "*" {
		var err error
		if areas, err = dobaasAllocated(flat, req.StartOffset, end); err != nil {
			return &methods.QueryChangedDiskAreasBody{Fault_: Fault(err.Error(), &types.FileFault{File: flat})}
		}
	} else {
		parts := strings.SplitN(req.ChangeId, "/", 2)
		cur := strings.SplitN(b.ChangeId, "/", 2)
		from, err := strconv.Atoi(parts[len(parts)-1])
		to, _ := strconv.Atoi(cur[1])
		if len(parts) != 2 || err != nil || parts[0] != cur[0] || from > to {
			return dobaasFault("changeId")
		}
		sc := dobaasReadSidecar(flat)
		if to > len(sc.Changes) {
			to = len(sc.Changes)
		}
		for _, c := range sc.Changes[from:to] {
			s, e := c[0], c[0]+c[1]
			if s < req.StartOffset {
				s = req.StartOffset
			}
			if e > end {
				e = end
			}
			if e > s {
				areas = append(areas, [2]int64{s, e - s})
			}
		}
	}
	sort.Slice(areas, func(i, j int) bool { return areas[i][0] < areas[j][0] })
	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: end - req.StartOffset}
	for _, a := range areas {
		n := len(info.ChangedArea)
		if n > 0 && info.ChangedArea[n-1].Start+info.ChangedArea[n-1].Length >= a[0] {
			last := &info.ChangedArea[n-1]
			if a[0]+a[1] > last.Start+last.Length {
				last.Length = a[0] + a[1] - last.Start
			}
			continue
		}
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: a[0], Length: a[1]})
	}
	return &methods.QueryChangedDiskAreasBody{Res: &types.QueryChangedDiskAreasResponse{Returnval: info}}
}
