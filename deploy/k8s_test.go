package deploy_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"
)

// object is one Kubernetes manifest; Spec is decoded per kind.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec       yaml.Node         `yaml:"spec"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`

	file string
}

func (o *object) String() string { return fmt.Sprintf("%s %s/%s", o.file, o.Kind, o.Metadata.Name) }

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type deploymentSpec struct {
	Replicas *int          `yaml:"replicas"`
	Selector labelSelector `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			SecurityContext *securityContext `yaml:"securityContext"`
			Containers      []container      `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type securityContext struct {
	RunAsNonRoot *bool `yaml:"runAsNonRoot"`
}

type keyRef struct {
	Name     string `yaml:"name"`
	Key      string `yaml:"key"`
	Optional bool   `yaml:"optional"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		Prefix       string  `yaml:"prefix"`
		ConfigMapRef *keyRef `yaml:"configMapRef"`
		SecretRef    *keyRef `yaml:"secretRef"`
	} `yaml:"envFrom"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *securityContext `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type serviceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort any    `yaml:"targetPort"`
	} `yaml:"ports"`
}

type pdbSpec struct {
	Selector       labelSelector `yaml:"selector"`
	MinAvailable   any           `yaml:"minAvailable"`
	MaxUnavailable any           `yaml:"maxUnavailable"`
}

// loadManifests decodes every document of every *.yaml file in dir.
func loadManifests(dir string) ([]*object, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.yaml files in %s", dir)
	}
	var objs []*object
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		dec := yaml.NewDecoder(f)
		for {
			o := &object{file: path}
			err := dec.Decode(o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if o.Kind == "" || o.APIVersion == "" || o.Metadata.Name == "" {
				f.Close()
				return nil, fmt.Errorf("%s: a document without apiVersion, kind or metadata.name", path)
			}
			objs = append(objs, o)
		}
		f.Close()
	}
	return objs, nil
}

// workload is a decoded Deployment.
type workload struct {
	obj  *object
	spec deploymentSpec
}

// checkK8s checks the manifests in dir and returns the services its
// Deployments run.
func checkK8s(t *testing.T, cb *codebase, dir string) []string {
	objs, err := loadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	// name -> keys, for the env references.
	configMaps, secrets := map[string]map[string]bool{}, map[string]map[string]bool{}
	var deployments []*workload
	for _, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			configMaps[o.Metadata.Name] = keySet(o.Data, nil)
		case "Secret":
			secrets[o.Metadata.Name] = keySet(o.Data, o.StringData)
		case "Deployment":
			w := &workload{obj: o}
			if err := o.Spec.Decode(&w.spec); err != nil {
				t.Errorf("%v: spec: %v", o, err)
				continue
			}
			deployments = append(deployments, w)
		}
	}

	var services []string
	ports := map[*workload]map[string]int{} // container port name and number -> number
	for _, w := range deployments {
		wr := reporter{t: t, where: w.obj.String()}
		pod := w.spec.Template
		if !subset(w.spec.Selector.MatchLabels, pod.Metadata.Labels) {
			wr.errorf("selector %v does not match the pod labels %v", w.spec.Selector.MatchLabels, pod.Metadata.Labels)
		}
		if len(pod.Spec.Containers) == 0 {
			wr.errorf("no containers")
		}
		ports[w] = map[string]int{}
		for _, c := range pod.Spec.Containers {
			cr := wr.at("container %s", c.Name)
			nonRoot := pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.RunAsNonRoot != nil && *pod.Spec.SecurityContext.RunAsNonRoot
			if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
				nonRoot = *c.SecurityContext.RunAsNonRoot
			}
			if !nonRoot {
				cr.errorf("securityContext.runAsNonRoot is not true")
			}
			for _, k := range []string{"cpu", "memory"} {
				if c.Resources.Requests[k] == "" || c.Resources.Limits[k] == "" {
					cr.errorf("resources: want requests and limits for %s", k)
				}
			}
			for _, p := range c.Ports {
				ports[w][strconv.Itoa(p.ContainerPort)] = p.ContainerPort
				if p.Name != "" {
					ports[w][p.Name] = p.ContainerPort
				}
			}

			svc := imageService(c.Image)
			services = append(services, svc)
			b, err := cb.binary(svc)
			if err != nil {
				cr.errorf("image %s: %v", c.Image, err)
				continue
			}
			if len(c.Command) > 0 {
				cr.errorf("sets command; the image's entrypoint is cmd/%s", svc)
			}
			cr.check(b.checkArgs(c.Args)...)
			port, err := b.httpPort(c.Args)
			if err != nil {
				cr.check(err)
				continue
			}
			for _, p := range c.Ports {
				if strconv.Itoa(p.ContainerPort) != port {
					cr.errorf("containerPort %d, but cmd/%s listens on %s", p.ContainerPort, svc, port)
				}
			}
			for _, e := range c.Env {
				cr.check(b.checkEnv(e.Name))
				if vf := e.ValueFrom; vf != nil {
					cr.check(refExists("Secret", secrets, vf.SecretKeyRef), refExists("ConfigMap", configMaps, vf.ConfigMapKeyRef))
				}
			}
			for _, ef := range c.EnvFrom {
				for kind, ref := range map[string]*keyRef{"ConfigMap": ef.ConfigMapRef, "Secret": ef.SecretRef} {
					if ref == nil {
						continue
					}
					keys, ok := map[string]map[string]map[string]bool{"ConfigMap": configMaps, "Secret": secrets}[kind][ref.Name]
					if !ok {
						cr.errorf("envFrom %s %s: no such %s in %s", kind, ref.Name, kind, dir)
					}
					for k := range keys {
						cr.check(b.checkEnv(ef.Prefix + k))
					}
				}
			}
			for name, p := range map[string]*probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
				if p == nil || p.HTTPGet == nil {
					cr.errorf("no %s.httpGet", name)
					continue
				}
				if got, ok := ports[w][fmt.Sprint(p.HTTPGet.Port)]; !ok || strconv.Itoa(got) != port {
					cr.errorf("%s port %v is not cmd/%s's port %s", name, p.HTTPGet.Port, svc, port)
				}
				cr.check(b.checkPath(p.HTTPGet.Path))
			}
		}
	}

	for _, o := range objs {
		or := reporter{t: t, where: o.String()}
		switch o.Kind {
		case "Service":
			var spec serviceSpec
			if err := o.Spec.Decode(&spec); err != nil {
				or.errorf("spec: %v", err)
				continue
			}
			w := selects(deployments, spec.Selector)
			if w == nil {
				or.errorf("selector %v matches no Deployment's pods", spec.Selector)
				continue
			}
			for _, p := range spec.Ports {
				target := fmt.Sprint(p.TargetPort)
				if p.TargetPort == nil {
					target = strconv.Itoa(p.Port)
				}
				if _, ok := ports[w][target]; !ok {
					or.errorf("port %s: targetPort %s is no container port of %v", p.Name, target, w.obj)
				}
			}
		case "PodDisruptionBudget":
			var spec pdbSpec
			if err := o.Spec.Decode(&spec); err != nil {
				or.errorf("spec: %v", err)
				continue
			}
			w := selects(deployments, spec.Selector.MatchLabels)
			if w == nil {
				or.errorf("selector %v matches no Deployment's pods", spec.Selector.MatchLabels)
				continue
			}
			if (spec.MinAvailable == nil) == (spec.MaxUnavailable == nil) {
				or.errorf("want exactly one of minAvailable and maxUnavailable")
			}
			if n, ok := spec.MinAvailable.(int); ok && w.spec.Replicas != nil && n >= *w.spec.Replicas {
				or.errorf("minAvailable %d with %d replicas blocks every voluntary disruption", n, *w.spec.Replicas)
			}
		}
	}
	for _, w := range deployments {
		n := 0
		for _, o := range objs {
			var spec pdbSpec
			if o.Kind == "PodDisruptionBudget" && o.Spec.Decode(&spec) == nil && subset(spec.Selector.MatchLabels, w.spec.Template.Metadata.Labels) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%v: %d PodDisruptionBudgets select its pods, want 1", w.obj, n)
		}
	}
	if len(deployments) == 0 {
		t.Errorf("%s: no Deployments", dir)
	}
	return services
}

// selects returns the Deployment whose pods sel matches, nil if none.
func selects(ds []*workload, sel map[string]string) *workload {
	for _, w := range ds {
		if subset(sel, w.spec.Template.Metadata.Labels) {
			return w
		}
	}
	return nil
}

// refExists reports a valueFrom reference to a missing object or key.
func refExists(kind string, objs map[string]map[string]bool, ref *keyRef) error {
	if ref == nil {
		return nil
	}
	keys, ok := objs[ref.Name]
	switch {
	case !ok:
		return fmt.Errorf("%s %s: no such %s in the manifests", kind, ref.Name, kind)
	case !keys[ref.Key] && !ref.Optional:
		return fmt.Errorf("%s %s has no key %s", kind, ref.Name, ref.Key)
	}
	return nil
}

func keySet(ms ...map[string]string) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		for k := range m {
			out[k] = true
		}
	}
	return out
}
