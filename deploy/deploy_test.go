package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matchingv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/matching/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/matcher/action/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	istionetv1alpha3 "istio.io/api/networking/v1alpha3"
	clientnetv1 "istio.io/client-go/pkg/apis/networking/v1"
	clientnetv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/phigate/phigate/envoy"
	"github.com/phigate/phigate/server"
)

var update = flag.Bool("update", false, "rewrite kustomize/base/envoy.yaml from the bootstrap generator")

const (
	baseDir    = "kustomize/base"
	istioDir   = "kustomize/overlays/istio"
	bootstrapF = "kustomize/base/envoy.yaml"
	meshConfig = "kustomize/overlays/istio/mesh-config.yaml"
)

// bootstrapConfig is what
//
//	phigate envoy bootstrap --listen 0.0.0.0:10000 --upstream 127.0.0.1:8080 --phigate 127.0.0.1:9191 -o deploy/kustomize/base/envoy.yaml
//
// passes to the generator (the other flags at their defaults): Envoy faces
// the pod's network, the legacy service and phigate sit on its loopback.
func bootstrapConfig() envoy.BootstrapConfig {
	return envoy.BootstrapConfig{
		Listen:          "0.0.0.0:10000",
		Admin:           "127.0.0.1:9901",
		Upstream:        "127.0.0.1:8080",
		Phigate:         "127.0.0.1:9191",
		Compress:        true,
		MaxResponseBody: 8 << 20,
	}
}

// The committed bootstrap is what the generator writes today: a change to
// the generator (a new safety setting, a renamed field) reaches the
// manifests, or this fails.
func TestBootstrapCurrent(t *testing.T) {
	want, err := envoy.Bootstrap(bootstrapConfig())
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(bootstrapF, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(bootstrapF)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: regenerate it with go test ./deploy -run TestBootstrapCurrent -update", bootstrapF)
	}
}

// object is one rendered manifest, decoded strictly into its API type.
type object struct {
	kind, name string
	value      any
}

func render(t *testing.T, dir string) [][]byte {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, y)
	}
	return docs
}

// strictJSON decodes JSON into a Kubernetes Go type as the API server does
// in strict mode: a field the type does not have, at any depth, a field
// given twice, or one whose case differs (targetport) is an error.
// encoding/json's DisallowUnknownFields would let the last one through,
// since it matches names regardless of case.
func strictJSON(j []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// istioEnvelope is an Istio resource with its spec left raw: the client-go
// types decode their specs leniently (unknown fields ignored), so the spec
// goes through protojson, which refuses them.
type istioEnvelope struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            json.RawMessage   `json:"spec"`
}

func decodeIstio(j []byte, spec proto.Message) (istioEnvelope, error) {
	var env istioEnvelope
	if err := strictJSON(j, &env); err != nil {
		return env, err
	}
	return env, protojson.Unmarshal(env.Spec, spec)
}

// decode turns one YAML manifest into its API type.
func decode(doc []byte) (object, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return object{}, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return object{}, err
	}
	o := object{kind: tm.Kind}
	gvk := tm.APIVersion + "/" + tm.Kind
	switch gvk {
	case "apps/v1/Deployment":
		var v appsv1.Deployment
		err, o.value, o.name = strictJSON(j, &v), &v, v.Name
	case "v1/Service":
		var v corev1.Service
		err, o.value, o.name = strictJSON(j, &v), &v, v.Name
	case "v1/ServiceAccount":
		var v corev1.ServiceAccount
		err, o.value, o.name = strictJSON(j, &v), &v, v.Name
	case "v1/ConfigMap":
		var v corev1.ConfigMap
		err, o.value, o.name = strictJSON(j, &v), &v, v.Name
	case "v1/PersistentVolumeClaim":
		var v corev1.PersistentVolumeClaim
		err, o.value, o.name = strictJSON(j, &v), &v, v.Name
	case "policy/v1/PodDisruptionBudget":
		var v policyv1.PodDisruptionBudget
		err, o.value, o.name = strictJSON(j, &v), &v, v.Name
	case "networking.k8s.io/v1/NetworkPolicy":
		var v networkingv1.NetworkPolicy
		err, o.value, o.name = strictJSON(j, &v), &v, v.Name
	case clientsecv1.SchemeGroupVersion.String() + "/AuthorizationPolicy":
		v := &clientsecv1.AuthorizationPolicy{}
		var env istioEnvelope
		env, err = decodeIstio(j, &v.Spec)
		v.TypeMeta, v.ObjectMeta = env.TypeMeta, env.Metadata
		o.value, o.name = v, v.Name
	case clientnetv1alpha3.SchemeGroupVersion.String() + "/EnvoyFilter":
		v := &clientnetv1alpha3.EnvoyFilter{}
		var env istioEnvelope
		env, err = decodeIstio(j, &v.Spec)
		v.TypeMeta, v.ObjectMeta = env.TypeMeta, env.Metadata
		o.value, o.name = v, v.Name
		if err == nil {
			err = checkPatchValues(&v.Spec)
		}
	case clientnetv1.SchemeGroupVersion.String() + "/ServiceEntry":
		v := &clientnetv1.ServiceEntry{}
		var env istioEnvelope
		env, err = decodeIstio(j, &v.Spec)
		v.TypeMeta, v.ObjectMeta = env.TypeMeta, env.Metadata
		o.value, o.name = v, v.Name
	default:
		return o, fmt.Errorf("%s: no API type known for this manifest", gvk)
	}
	if err != nil {
		return o, fmt.Errorf("%s %s: %w", tm.Kind, o.name, err)
	}
	return o, nil
}

// checkPatchValues decodes every EnvoyFilter patch value into the Envoy type
// it patches: the values are google.protobuf.Struct to Istio, so without
// this a misspelt Envoy field would reach the proxy, which rejects the
// whole listener.
func checkPatchValues(ef *istionetv1alpha3.EnvoyFilter) error {
	for i, p := range ef.GetConfigPatches() {
		j, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			return err
		}
		var m proto.Message
		switch p.GetApplyTo() {
		case istionetv1alpha3.EnvoyFilter_HTTP_FILTER:
			m = &hcmv3.HttpFilter{}
		case istionetv1alpha3.EnvoyFilter_NETWORK_FILTER:
			m = &listenerv3.Filter{}
		case istionetv1alpha3.EnvoyFilter_ROUTE_CONFIGURATION:
			m = &routev3.RouteConfiguration{}
		default:
			return fmt.Errorf("configPatches[%d]: no Envoy type known for %s", i, p.GetApplyTo())
		}
		if err := protojson.Unmarshal(j, m); err != nil {
			return fmt.Errorf("configPatches[%d] (%s): %w", i, p.GetApplyTo(), err)
		}
	}
	return nil
}

func decodeAll(t *testing.T, docs [][]byte) map[string]object {
	t.Helper()
	objs := map[string]object{}
	for _, d := range docs {
		o, err := decode(d)
		if err != nil {
			t.Fatal(err)
		}
		objs[o.kind] = o
	}
	return objs
}

func get[T any](t *testing.T, objs map[string]object, kind string) T {
	t.Helper()
	o, ok := objs[kind]
	if !ok {
		t.Fatalf("no %s rendered", kind)
	}
	return o.value.(T)
}

// decodeMesh reads the mesh configuration fragment: one key, meshConfig,
// holding a MeshConfig.
func decodeMesh(doc []byte) (*meshv1alpha1.MeshConfig, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, err
	}
	var top struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	}
	if err := strictJSON(j, &top); err != nil {
		return nil, err
	}
	mc := &meshv1alpha1.MeshConfig{}
	return mc, protojson.Unmarshal(top.MeshConfig, mc)
}

func TestManifestsDecodeStrictly(t *testing.T) {
	for _, dir := range []string{baseDir, istioDir} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			objs := decodeAll(t, render(t, dir))
			want := []string{"ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim", "PodDisruptionBudget", "Service", "ServiceAccount"}
			if dir == istioDir {
				want = append(want, "AuthorizationPolicy", "EnvoyFilter", "ServiceEntry")
			}
			var got []string
			for k := range objs {
				got = append(got, k)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("rendered kinds = %v, want %v", got, want)
			}
		})
	}
	raw, err := os.ReadFile(meshConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeMesh(raw); err != nil {
		t.Fatalf("%s: %v", meshConfig, err)
	}
}

// A misspelt or misplaced field fails the decoding, at any depth and in
// every kind of manifest: the test above would otherwise prove nothing.
func TestManifestsRefuseUnknownFields(t *testing.T) {
	docs := append(render(t, baseDir), render(t, istioDir)...)
	cases := []struct{ name, kind, old, new string }{
		{"deployment field", "Deployment", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"},
		{"probe field", "Deployment", "readinessProbe:", "readinesProbe:"},
		{"service port field", "Service", "targetPort:", "targetport:"},
		{"pdb field", "PodDisruptionBudget", "maxUnavailable:", "maxUnavaliable:"},
		{"network policy field", "NetworkPolicy", "policyTypes:", "policyType:"},
		{"authorization policy field", "AuthorizationPolicy", "action: CUSTOM", "actions: CUSTOM"},
		{"authorization policy enum", "AuthorizationPolicy", "action: CUSTOM", "action: CUSTOMER"},
		{"service entry field", "ServiceEntry", "resolution: STATIC", "resolutions: STATIC"},
		{"envoy filter field", "EnvoyFilter", "workloadSelector:", "workloadselector:"},
		{"ext_proc field inside a patch value", "EnvoyFilter", "response_body_mode: BUFFERED", "response_body_mod: BUFFERED"},
		{"ext_proc enum inside a patch value", "EnvoyFilter", "response_body_mode: BUFFERED", "response_body_mode: BUFFER"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hit := false
			for _, d := range docs {
				if !bytes.Contains(d, []byte("kind: "+c.kind+"\n")) || !bytes.Contains(d, []byte(c.old)) {
					continue
				}
				hit = true
				if _, err := decode(bytes.Replace(d, []byte(c.old), []byte(c.new), 1)); err == nil {
					t.Errorf("%s with %q decoded without error", c.kind, c.new)
				}
			}
			if !hit {
				t.Fatalf("no %s holds %q", c.kind, c.old)
			}
		})
	}
	raw, err := os.ReadFile(meshConfig)
	if err != nil {
		t.Fatal(err)
	}
	// The HTTP provider's header settings do not exist on the gRPC provider.
	bad := bytes.Replace(raw, []byte("      failOpen: false"), []byte("      failOpen: false\n      includeRequestHeadersInCheck: [authorization]"), 1)
	if bytes.Equal(bad, raw) {
		t.Fatal("mesh config has no failOpen line to extend")
	}
	if _, err := decodeMesh(bad); err == nil {
		t.Error("envoyExtAuthzGrpc.includeRequestHeadersInCheck decoded without error")
	}
}

func hostPort(t *testing.T, field, hp string) (string, int32) {
	t.Helper()
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		t.Fatalf("%s: %v", field, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s: %v", field, err)
	}
	return h, int32(n)
}

// phigateConfig reads phigate.yaml out of the rendered ConfigMap and
// validates it as phigate serve would. The key files exist in the pod, not
// here: their directory is moved under a temporary one holding stand-ins.
func phigateConfig(t *testing.T, cm *corev1.ConfigMap) *server.Config {
	t.Helper()
	raw, ok := cm.Data["phigate.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no phigate.yaml", cm.Name)
	}
	const keys = "/etc/phigate/keys/"
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"plan-marker.key", "audit-signing.key"} {
		if !strings.Contains(raw, keys+k) {
			t.Fatalf("phigate.yaml does not name %s%s, which the Deployment provides", keys, k)
		}
		if err := os.WriteFile(filepath.Join(dir, "keys", k), []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	raw = strings.ReplaceAll(raw, keys, filepath.Join(dir, "keys")+"/")
	p := filepath.Join(dir, "phigate.yaml")
	if err := os.WriteFile(p, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := server.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func container(t *testing.T, pod *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

// portOf resolves a port given by name or number among the pod's containers.
func portOf(pod *corev1.PodSpec, name string, number int32) (corev1.ContainerPort, bool) {
	for _, c := range pod.Containers {
		for _, p := range c.Ports {
			if (name != "" && p.Name == name) || (name == "" && p.ContainerPort == number) {
				return p, true
			}
		}
	}
	return corev1.ContainerPort{}, false
}

func matches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// adminPaths are the paths phigate's admin server routes, read from its
// source: the probes must name paths phigate serves, and a renamed handler
// must fail here rather than in a cluster whose pods never become ready.
func adminPaths(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("../server/server.go")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, m := range regexp.MustCompile(`mux\.HandleFunc\("GET (/[a-z]+)"`).FindAllSubmatch(src, -1) {
		paths = append(paths, string(m[1]))
	}
	if len(paths) == 0 {
		t.Fatal("no admin routes found in server/server.go")
	}
	return paths
}

// The base's pieces agree with each other and with phigate: the Service
// reaches ports the pod has, the probes hit what phigate serves on the
// port phigate.yaml names, Envoy's bootstrap reaches phigate where
// phigate listens, the NetworkPolicy keeps phigate's gRPC port closed.
func TestBaseCrossReferences(t *testing.T) {
	objs := decodeAll(t, render(t, baseDir))
	dep := get[*appsv1.Deployment](t, objs, "Deployment")
	svc := get[*corev1.Service](t, objs, "Service")
	cm := get[*corev1.ConfigMap](t, objs, "ConfigMap")
	np := get[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy")
	pdb := get[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
	sa := get[*corev1.ServiceAccount](t, objs, "ServiceAccount")
	pod := &dep.Spec.Template.Spec
	labels := dep.Spec.Template.Labels
	cfg := phigateConfig(t, cm)

	checkCommon(t, objs, cfg)

	if !matches(dep.Spec.Selector.MatchLabels, labels) || !matches(svc.Spec.Selector, labels) ||
		!matches(pdb.Spec.Selector.MatchLabels, labels) || !matches(np.Spec.PodSelector.MatchLabels, labels) {
		t.Error("a selector (Deployment, Service, PodDisruptionBudget or NetworkPolicy) does not select the pod's labels")
	}
	if pod.ServiceAccountName != sa.Name {
		t.Errorf("pod serviceAccountName = %q, want %q", pod.ServiceAccountName, sa.Name)
	}

	// Envoy's bootstrap in the ConfigMap is the committed one, and it
	// reaches phigate at phigate's listen address.
	file, err := os.ReadFile(bootstrapF)
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["envoy.yaml"] != string(file) {
		t.Error("the ConfigMap's envoy.yaml differs from " + bootstrapF)
	}
	bc := bootstrapConfig()
	if bc.Phigate != cfg.Listen.GRPC {
		t.Errorf("bootstrap reaches phigate at %s, phigate listens on %s", bc.Phigate, cfg.Listen.GRPC)
	}
	_, listen := hostPort(t, "bootstrap listen", bc.Listen)
	ev := container(t, pod, "envoy")
	if p, ok := portOf(pod, "http", 0); !ok || p.ContainerPort != listen || !slices.Contains(ev.Ports, p) {
		t.Errorf("envoy's container port http = %+v, want %d (the bootstrap's listener)", p, listen)
	}
	_, upstream := hostPort(t, "bootstrap upstream", bc.Upstream)
	if p, ok := portOf(pod, "", upstream); !ok || !slices.Contains(container(t, pod, "legacy").Ports, p) {
		t.Errorf("the bootstrap's upstream port %d is not the legacy container's", upstream)
	}
	if ev.Args[slices.Index(ev.Args, "--config-path")+1] != mountedAt(t, ev, "config", "envoy.yaml") {
		t.Error("envoy's --config-path is not where the bootstrap is mounted")
	}
}

// mountedAt is the path at which a container sees one key of a volume.
func mountedAt(t *testing.T, c *corev1.Container, volume, key string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volume && m.SubPath == key {
			return m.MountPath
		}
	}
	t.Fatalf("container %s does not mount %s of volume %s", c.Name, key, volume)
	return ""
}

// checkCommon holds what base and overlay share: phigate's container,
// probes, admin port, Service and NetworkPolicy.
func checkCommon(t *testing.T, objs map[string]object, cfg *server.Config) {
	t.Helper()
	dep := get[*appsv1.Deployment](t, objs, "Deployment")
	svc := get[*corev1.Service](t, objs, "Service")
	cm := get[*corev1.ConfigMap](t, objs, "ConfigMap")
	np := get[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy")
	pvc := get[*corev1.PersistentVolumeClaim](t, objs, "PersistentVolumeClaim")
	pod := &dep.Spec.Template.Spec
	pg := container(t, pod, "phigate")

	if got := pg.Args[slices.Index(pg.Args, "--config")+1]; got != mountedAt(t, pg, "config", "phigate.yaml") {
		t.Errorf("phigate --config %s is not where phigate.yaml is mounted", got)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	if v := vols["config"]; v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
		t.Errorf("volume config names ConfigMap %v, rendered %s", v.ConfigMap, cm.Name)
	}
	if v := vols["audit"]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Errorf("volume audit does not name the claim %s", pvc.Name)
	}
	for _, m := range pg.VolumeMounts {
		if m.Name == "audit" && (!strings.HasPrefix(cfg.Audit.Dir, m.MountPath+"/") || m.SubPathExpr != "$(POD_NAME)") {
			t.Errorf("audit.dir %s is not in the per-pod directory of the audit volume (%+v)", cfg.Audit.Dir, m)
		}
	}

	// gRPC on loopback: no other pod can reach it, whatever the network.
	if h, _ := hostPort(t, "listen.grpc", cfg.Listen.GRPC); !net.ParseIP(h).IsLoopback() {
		t.Errorf("listen.grpc %s is not loopback: phigate would take Checks from anyone who reaches the pod", cfg.Listen.GRPC)
	}
	_, grpcPort := hostPort(t, "listen.grpc", cfg.Listen.GRPC)
	if _, ok := portOf(pod, "", grpcPort); ok {
		t.Errorf("phigate's gRPC port %d is declared as a container port; it serves loopback only", grpcPort)
	}
	_, adminPort := hostPort(t, "listen.admin", cfg.Listen.Admin)
	if p, ok := portOf(pod, "admin", 0); !ok || p.ContainerPort != adminPort || !slices.Contains(pg.Ports, p) {
		t.Errorf("phigate's container port admin = %+v, want %d (listen.admin)", p, adminPort)
	}
	served := adminPaths(t)
	for name, probe := range map[string]*corev1.Probe{"readiness": pg.ReadinessProbe, "liveness": pg.LivenessProbe, "startup": pg.StartupProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz", "startup": "/healthz"}[name]
		switch {
		case probe == nil || probe.HTTPGet == nil:
			t.Errorf("%s probe: none over HTTP", name)
		case probe.HTTPGet.Path != want || !slices.Contains(served, probe.HTTPGet.Path):
			t.Errorf("%s probe path %s, want %s (phigate serves %v)", name, probe.HTTPGet.Path, want, served)
		case probe.HTTPGet.Port.String() != "admin":
			t.Errorf("%s probe port %s, want admin", name, probe.HTTPGet.Port.String())
		}
	}
	if pg.Resources.Requests.Cpu().IsZero() || pg.Resources.Requests.Memory().IsZero() {
		t.Error("phigate has no CPU or memory request")
	}
	if lim := pg.Resources.Limits.Memory(); lim.Value() < int64(cfg.Runtime.MemoryLimitMB)<<20 {
		t.Errorf("phigate's memory limit %s is under runtime.memory_limit_mb %d MiB", lim, cfg.Runtime.MemoryLimitMB)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || float64(*g) <= (cfg.Shutdown.DrainDelay+cfg.Shutdown.Grace).Seconds() {
		t.Errorf("terminationGracePeriodSeconds %v is not above drain_delay + grace (%s)", g, cfg.Shutdown.DrainDelay+cfg.Shutdown.Grace)
	}

	// Every Service port reaches a port of the pod, by the same name.
	for _, sp := range svc.Spec.Ports {
		p, ok := portOf(pod, sp.TargetPort.StrVal, sp.TargetPort.IntVal)
		if !ok || p.Name != sp.Name {
			t.Errorf("Service port %s targets %s, which no container port named %s answers", sp.Name, sp.TargetPort.String(), sp.Name)
		}
	}

	// The NetworkPolicy names ports the pod has, never phigate's gRPC port,
	// and admits admin only from the monitoring namespace.
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			pp, ok := portOf(pod, p.Port.StrVal, p.Port.IntVal)
			if p.Port.Type == 0 && p.Port.IntVal == grpcPort {
				t.Errorf("NetworkPolicy admits phigate's gRPC port %d", grpcPort)
			}
			if ok && pp.Name == "admin" {
				if len(rule.From) != 1 || rule.From[0].PodSelector != nil || rule.From[0].NamespaceSelector == nil ||
					rule.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
					t.Errorf("NetworkPolicy admits phigate's admin port from %+v, want the monitoring namespace only", rule.From)
				}
			}
			if !ok && p.Port.Type != 0 {
				t.Errorf("NetworkPolicy names port %s, which no container has", p.Port.String())
			}
		}
	}
}

// The Istio overlay agrees with the mesh configuration, with phigate and
// with the generated bootstrap: the extension provider reaches phigate on
// the port it listens on, the EnvoyFilter's ext_proc uses the cluster Istio
// builds for it and the bootstrap's processing settings, and the policy
// and filters cover the legacy port the Service targets.
func TestIstioCrossReferences(t *testing.T) {
	objs := decodeAll(t, render(t, istioDir))
	dep := get[*appsv1.Deployment](t, objs, "Deployment")
	svc := get[*corev1.Service](t, objs, "Service")
	ap := get[*clientsecv1.AuthorizationPolicy](t, objs, "AuthorizationPolicy")
	ef := get[*clientnetv1alpha3.EnvoyFilter](t, objs, "EnvoyFilter")
	se := get[*clientnetv1.ServiceEntry](t, objs, "ServiceEntry")
	pod := &dep.Spec.Template.Spec
	labels := dep.Spec.Template.Labels
	cfg := phigateConfig(t, get[*corev1.ConfigMap](t, objs, "ConfigMap"))

	checkCommon(t, objs, cfg)

	for _, c := range pod.Containers {
		if c.Name == "envoy" {
			t.Error("the overlay keeps the base's Envoy container beside istio-proxy")
		}
	}
	if labels["sidecar.istio.io/inject"] != "true" {
		t.Error("the pod is not marked for injection")
	}
	legacy := container(t, pod, "legacy")
	http, ok := portOf(pod, "http", 0)
	if !ok || !slices.Contains(legacy.Ports, http) {
		t.Fatal("the legacy container has no port named http for the Service to target")
	}
	_, upstream := hostPort(t, "bootstrap upstream", bootstrapConfig().Upstream)
	if http.ContainerPort != upstream || cfg.Owners.Upstream != fmt.Sprintf("http://127.0.0.1:%d", upstream) {
		t.Errorf("legacy port %d, the bootstrap's upstream %d and owners.upstream %s disagree", http.ContainerPort, upstream, cfg.Owners.Upstream)
	}
	var svcHTTP bool
	for _, sp := range svc.Spec.Ports {
		svcHTTP = svcHTTP || sp.Name == "http" && sp.TargetPort.StrVal == "http"
	}
	if !svcHTTP {
		t.Error("the Service's http port does not target the legacy port")
	}

	raw, err := os.ReadFile(meshConfig)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := decodeMesh(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(mc.GetExtensionProviders()) != 1 {
		t.Fatalf("mesh config has %d extension providers, want 1", len(mc.GetExtensionProviders()))
	}
	prov := mc.GetExtensionProviders()[0]
	grpc := prov.GetEnvoyExtAuthzGrpc()
	if grpc == nil {
		t.Fatalf("provider %s is not envoyExtAuthzGrpc", prov.GetName())
	}

	// The provider names the ServiceEntry, whose port is phigate's gRPC
	// port and whose one endpoint is the pod's loopback.
	_, grpcPort := hostPort(t, "listen.grpc", cfg.Listen.GRPC)
	spec := &se.Spec
	if !slices.Contains(spec.GetHosts(), grpc.GetService()) {
		t.Errorf("provider service %s is not a host of ServiceEntry %s (%v)", grpc.GetService(), se.Name, spec.GetHosts())
	}
	if len(spec.GetPorts()) != 1 || spec.GetPorts()[0].GetNumber() != grpc.GetPort() || grpc.GetPort() != uint32(grpcPort) {
		t.Errorf("provider port %d, ServiceEntry ports %v and listen.grpc %s disagree", grpc.GetPort(), spec.GetPorts(), cfg.Listen.GRPC)
	}
	if eps := spec.GetEndpoints(); len(eps) != 1 || !net.ParseIP(eps[0].GetAddress()).IsLoopback() ||
		eps[0].GetAddress() != strings.Split(cfg.Listen.GRPC, ":")[0] {
		t.Errorf("ServiceEntry endpoints %v are not phigate's listen address %s", eps, cfg.Listen.GRPC)
	}
	if !slices.Equal(spec.GetExportTo(), []string{"."}) {
		t.Errorf("ServiceEntry exportTo %v, want [.]: a loopback name must not leak to other namespaces", spec.GetExportTo())
	}
	cluster := fmt.Sprintf("outbound|%d||%s", grpc.GetPort(), grpc.GetService())

	// The provider fails closed and sends the body as the bootstrap does.
	bsFilters := bootstrapFilters(t)
	var bsAuthz extauthzv3.ExtAuthz
	unwrap(t, bsFilters["envoy.filters.http.ext_authz"], &bsAuthz)
	body := grpc.GetIncludeRequestBodyInCheck()
	if grpc.GetFailOpen() || grpc.GetStatusOnError() != "503" || bsAuthz.GetFailureModeAllow() {
		t.Error("the provider or the bootstrap does not fail closed with 503")
	}
	wb := bsAuthz.GetWithRequestBody()
	if body.GetMaxRequestBytes() != wb.GetMaxRequestBytes() || body.GetAllowPartialMessage() != wb.GetAllowPartialMessage() || body.GetPackAsBytes() != wb.GetPackAsBytes() {
		t.Errorf("includeRequestBodyInCheck %v differs from the bootstrap's with_request_body %v", body, wb)
	}
	if grpc.GetTimeout().AsDuration() != bsAuthz.GetGrpcService().GetTimeout().AsDuration() {
		t.Errorf("provider timeout %s, bootstrap's %s", grpc.GetTimeout().AsDuration(), bsAuthz.GetGrpcService().GetTimeout().AsDuration())
	}

	// The AuthorizationPolicy hands the legacy port to that provider.
	if ap.Spec.GetAction().String() != "CUSTOM" || ap.Spec.GetProvider().GetName() != prov.GetName() {
		t.Errorf("AuthorizationPolicy action %s provider %q, want CUSTOM %q", ap.Spec.GetAction(), ap.Spec.GetProvider().GetName(), prov.GetName())
	}
	if !matches(ap.Spec.GetSelector().GetMatchLabels(), labels) || !matches(ef.Spec.GetWorkloadSelector().GetLabels(), labels) {
		t.Error("the AuthorizationPolicy or the EnvoyFilter does not select the pod")
	}
	var apPorts []string
	for _, r := range ap.Spec.GetRules() {
		for _, to := range r.GetTo() {
			apPorts = append(apPorts, to.GetOperation().GetPorts()...)
		}
	}
	legacyPort := strconv.Itoa(int(http.ContainerPort))
	if !slices.Equal(apPorts, []string{legacyPort}) {
		t.Errorf("AuthorizationPolicy covers ports %v, want exactly the legacy port %s", apPorts, legacyPort)
	}

	// Every EnvoyFilter patch is on the legacy port's inbound listener, and
	// the ext_proc it inserts is the bootstrap's but for its cluster.
	var inserted *hcmv3.HttpFilter
	for i, p := range ef.Spec.GetConfigPatches() {
		m := p.GetMatch()
		port := m.GetListener().GetPortNumber()
		if m.GetRouteConfiguration() != nil {
			port = m.GetRouteConfiguration().GetPortNumber()
		}
		if m.GetContext() != istionetv1alpha3.EnvoyFilter_SIDECAR_INBOUND || port != uint32(http.ContainerPort) {
			t.Errorf("configPatches[%d] matches %s port %d, want SIDECAR_INBOUND %d", i, m.GetContext(), port, http.ContainerPort)
		}
		if p.GetPatch().GetOperation() == istionetv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE {
			if sub := m.GetListener().GetFilterChain().GetFilter().GetSubFilter().GetName(); sub != "envoy.filters.http.router" {
				t.Errorf("ext_proc is inserted before %s, want the router", sub)
			}
			j, _ := protojson.Marshal(p.GetPatch().GetValue())
			inserted = &hcmv3.HttpFilter{}
			if err := protojson.Unmarshal(j, inserted); err != nil {
				t.Fatal(err)
			}
		}
	}
	if inserted == nil {
		t.Fatal("the EnvoyFilter inserts no filter")
	}
	var gotM, wantM matchingv3.ExtensionWithMatcher
	unwrap(t, inserted, &gotM)
	unwrap(t, bsFilters["envoy.filters.http.ext_proc"], &wantM)
	var gotP, wantP extprocv3.ExternalProcessor
	if err := gotM.GetExtensionConfig().GetTypedConfig().UnmarshalTo(&gotP); err != nil {
		t.Fatal(err)
	}
	if err := wantM.GetExtensionConfig().GetTypedConfig().UnmarshalTo(&wantP); err != nil {
		t.Fatal(err)
	}
	if c := gotP.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != cluster {
		t.Errorf("ext_proc cluster %s, want %s (the provider's, as Istio names it)", c, cluster)
	}
	if !slices.Contains(gotP.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(), envoy.AuthzNamespace) {
		t.Errorf("ext_proc does not forward %s, where the plan and its marker are", envoy.AuthzNamespace)
	}
	if gotP.GetGrpcService().GetTimeout().AsDuration() != wantP.GetGrpcService().GetTimeout().AsDuration() {
		t.Error("ext_proc's gRPC timeout differs from the bootstrap's")
	}
	gotP.GrpcService, wantP.GrpcService = nil, nil
	if !proto.Equal(&gotP, &wantP) {
		t.Errorf("ext_proc differs from the bootstrap's (cluster aside):\n got %v\nwant %v", &gotP, &wantP)
	}
	if !proto.Equal(gotM.GetXdsMatcher(), wantM.GetXdsMatcher()) || inserted.GetName() != bsFilters["envoy.filters.http.ext_proc"].GetName() {
		t.Error("ext_proc's name or its matcher (skip Envoy's own replies) differs from the bootstrap's")
	}
}

// bootstrapFilters are the HTTP filters of the committed bootstrap's
// listener, by name.
func bootstrapFilters(t *testing.T) map[string]*hcmv3.HttpFilter {
	t.Helper()
	raw, err := os.ReadFile(bootstrapF)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var bs struct {
		StaticResources struct {
			Listeners []struct {
				FilterChains []struct {
					Filters []struct {
						TypedConfig struct {
							HTTPFilters []json.RawMessage `json:"http_filters"`
						} `json:"typed_config"`
					} `json:"filters"`
				} `json:"filter_chains"`
			} `json:"listeners"`
		} `json:"static_resources"`
	}
	if err := json.Unmarshal(j, &bs); err != nil {
		t.Fatal(err)
	}
	out := map[string]*hcmv3.HttpFilter{}
	for _, raw := range bs.StaticResources.Listeners[0].FilterChains[0].Filters[0].TypedConfig.HTTPFilters {
		f := &hcmv3.HttpFilter{}
		// Lua and the compressor are not in this binary's registry; only
		// the filters compared here are decoded.
		var probe struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(raw, &probe); err != nil {
			t.Fatal(err)
		}
		if probe.Name != "envoy.filters.http.ext_authz" && probe.Name != "envoy.filters.http.ext_proc" {
			continue
		}
		if err := protojson.Unmarshal(raw, f); err != nil {
			t.Fatalf("bootstrap filter %s: %v", probe.Name, err)
		}
		out[f.GetName()] = f
	}
	if len(out) != 2 {
		t.Fatalf("bootstrap has filters %v, want ext_authz and ext_proc", out)
	}
	return out
}

func unwrap(t *testing.T, f *hcmv3.HttpFilter, m proto.Message) {
	t.Helper()
	if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
		t.Fatalf("filter %s: %v", f.GetName(), err)
	}
}
