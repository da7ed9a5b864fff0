package bench

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports; reading it properly needs
// sysconf and cgo.
const clockTicks = 100

// ProcessStage is the target process's cost during one stage.
type ProcessStage struct {
	// CPUCores is user+system CPU time divided by wall time (1.0 = one core busy).
	CPUCores float64 `json:"cpu_cores"`
	// CPUPerRequestUS is CPU microseconds per answered request.
	CPUPerRequestUS float64 `json:"cpu_per_request_us"`
	RSSMiB          float64 `json:"rss_mib"` // at the end of the stage
}

// RSSSample is one point of the memory series, taken once a second.
type RSSSample struct {
	T      float64 `json:"t_s"` // since the start of the run
	RSSMiB float64 `json:"rss_mib"`
}

// procTimes returns user+system CPU seconds of pid.
func procTimes(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, wrapErr(CodeProcess, "read stat", err)
	}
	// The command name is in parentheses and may hold spaces; fields are
	// counted after the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fieldErr(CodeProcess, "stat", "unexpected format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fieldErr(CodeProcess, "stat", "too few fields")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	stt, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fieldErr(CodeProcess, "stat", "bad utime/stime")
	}
	return float64(ut+stt) / clockTicks, nil
}

// procRSS returns VmRSS of pid in MiB.
func procRSS(pid int) (float64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, wrapErr(CodeProcess, "read status", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fs := strings.Fields(v)
			if len(fs) >= 1 {
				kb, err := strconv.ParseFloat(fs[0], 64)
				if err == nil {
					return kb / 1024, nil
				}
			}
		}
	}
	return 0, fieldErr(CodeProcess, "status", "no VmRSS")
}

// FindPID returns the local process that listens on addr ("host:port" or
// "unix:///path" or an http URL), by matching the listening socket's inode
// in /proc/net/{tcp,tcp6,unix} against every process's open descriptors.
// Processes of other users are skipped silently (their fd tables are not
// readable), so 0 and an error mean "not found here", not "not running".
func FindPID(addr string) (int, error) {
	inodes, err := listeningInodes(addr)
	if err != nil {
		return 0, err
	}
	if len(inodes) == 0 {
		return 0, fieldErr(CodeProcess, "", "no local listener for %s", addr)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, wrapErr(CodeProcess, "list /proc", err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name()))
			if err != nil {
				continue
			}
			if in, ok := strings.CutPrefix(l, "socket:["); ok && inodes[strings.TrimSuffix(in, "]")] {
				return pid, nil
			}
		}
	}
	return 0, fieldErr(CodeProcess, "", "listener for %s belongs to no readable process", addr)
}

func listeningInodes(addr string) (map[string]bool, error) {
	found := map[string]bool{}
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		b, err := os.ReadFile("/proc/net/unix")
		if err != nil {
			return nil, wrapErr(CodeProcess, "read /proc/net/unix", err)
		}
		// Num RefCount Protocol Flags Type St Inode Path; flags 00010000 = listening.
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) >= 8 && f[7] == p && f[3] == "00010000" {
				found[f[6]] = true
			}
		}
		return found, nil
	}
	hostport := addr
	if kindOf(addr) == kindHTTP {
		hostport = strings.SplitN(strings.SplitN(addr, "://", 2)[1], "/", 2)[0]
		if !strings.Contains(hostport, ":") {
			hostport += ":80"
		}
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, wrapErr(CodeProcess, "address", err)
	}
	if ip := net.ParseIP(host); host != "" && host != "localhost" && (ip == nil || !ip.IsLoopback() && !ip.IsUnspecified()) {
		if !isLocalIP(ip) {
			return found, nil
		}
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, wrapErr(CodeProcess, "port", err)
	}
	want := strings.ToUpper(strconv.FormatUint(pn|0x10000, 16)[1:]) // 4 hex digits
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		// sl local_address rem_address st ... inode (field 9); st 0A = LISTEN.
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			if _, p, ok := strings.Cut(f[1], ":"); ok && p == want {
				found[f[9]] = true
			}
		}
	}
	return found, nil
}

func isLocalIP(ip net.IP) bool {
	if ip == nil {
		return false
	}
	as, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// sampler reads a process's CPU and RSS once a second for the whole run
// and on demand at stage boundaries.
type sampler struct {
	pid   int
	start time.Time
	mu    sync.Mutex
	rss   []RSSSample
	err   error
}

func startSampler(ctx context.Context, pid int, start time.Time) *sampler {
	s := &sampler{pid: pid, start: start}
	s.sample()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *sampler) sample() {
	r, err := procRSS(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.err = err
		return
	}
	s.rss = append(s.rss, RSSSample{T: time.Since(s.start).Seconds(), RSSMiB: r})
}

func (s *sampler) series() ([]RSSSample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]RSSSample(nil), s.rss...), s.err
}

// cpuMark is a CPU reading at an instant, to difference over a stage.
type cpuMark struct {
	cpu float64
	at  time.Time
	ok  bool
}

func markCPU(pid int) cpuMark {
	c, err := procTimes(pid)
	return cpuMark{cpu: c, at: time.Now(), ok: err == nil}
}

func processStage(pid int, from cpuMark, answered int64) *ProcessStage {
	to := markCPU(pid)
	if !from.ok || !to.ok {
		return nil
	}
	ps := &ProcessStage{}
	used := to.cpu - from.cpu
	if wall := to.at.Sub(from.at).Seconds(); wall > 0 {
		ps.CPUCores = used / wall
	}
	if answered > 0 {
		ps.CPUPerRequestUS = used * 1e6 / float64(answered)
	}
	ps.RSSMiB, _ = procRSS(pid)
	return ps
}
