// Command kindcheck validates a kind cluster config file the way `kind create cluster --config`
// reads it, without creating anything (and without Docker).
//
//	go run . ../../kind-config.yaml
//
// It decodes the file strictly into sigs.k8s.io/kind/pkg/apis/config/v1alpha4.Cluster twice: with
// the decoder kind itself uses (go.yaml.in/yaml/v3 with KnownFields, as in kind's internal
// pkg/internal/apis/config/encoding, which cannot be imported), and with sigs.k8s.io/yaml's
// UnmarshalStrict (JSON field names). Unknown or duplicate fields and wrongly typed values fail
// both. It then repeats the checks of kind's internal Cluster.Validate that apply to what the file
// sets, and checks that every kubeadmConfigPatches entry is a YAML object with a kind, that the
// taints it sets are well formed, and that a node image pinned by digest, if it is the image of
// this kind release, has that release's digest.
//
// Exit status 0: valid; 1: invalid (the reasons on stderr); 2: usage.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/kind/pkg/apis/config/defaults"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

const (
	wantAPIVersion = "kind.x-k8s.io/v1alpha4"
	wantKind       = "Cluster"
)

// Same as kind's validNameRE.
var validNameRE = regexp.MustCompile(`^[a-z0-9.-]+$`)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kindcheck KIND_CONFIG.yaml")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cluster, errs := check(raw)
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], e)
		}
		os.Exit(1)
	}
	fmt.Printf("%s: valid %s %s %q with %d nodes\n", os.Args[1], cluster.APIVersion, cluster.Kind,
		cluster.Name, len(cluster.Nodes))
}

func check(raw []byte) (*v1alpha4.Cluster, []error) {
	// kind first reads only kind/apiVersion, then decodes the versioned type strictly.
	var tm struct {
		Kind       string `yaml:"kind"`
		APIVersion string `yaml:"apiVersion"`
	}
	if err := yamlv3.Unmarshal(raw, &tm); err != nil {
		return nil, []error{fmt.Errorf("could not determine kind / apiVersion: %w", err)}
	}
	if tm.APIVersion != wantAPIVersion {
		return nil, []error{fmt.Errorf("apiVersion is %q, want %q", tm.APIVersion, wantAPIVersion)}
	}
	if tm.Kind != wantKind {
		return nil, []error{fmt.Errorf("kind is %q, want %q", tm.Kind, wantKind)}
	}

	cluster := &v1alpha4.Cluster{}
	dec := yamlv3.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cluster); err != nil {
		return nil, []error{fmt.Errorf("unable to decode config (as kind does): %w", err)}
	}
	var viaJSON v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(raw, &viaJSON); err != nil {
		return nil, []error{fmt.Errorf("unable to decode config (sigs.k8s.io/yaml strict): %w", err)}
	}
	if cluster.Kind != wantKind || cluster.APIVersion != wantAPIVersion {
		return nil, []error{fmt.Errorf("decoded TypeMeta is %s/%s", cluster.APIVersion, cluster.Kind)}
	}
	return cluster, validate(cluster)
}

// validate mirrors kind's internal (*Cluster).Validate for the fields the file sets (defaults,
// which kind fills in before validating, are valid by construction).
func validate(c *v1alpha4.Cluster) []error {
	var errs []error
	if c.Name != "" && !validNameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("%q is not a valid cluster name, it must match %s", c.Name, validNameRE))
	}
	if c.Networking.APIServerPort != 0 {
		if err := validatePort(c.Networking.APIServerPort); err != nil {
			errs = append(errs, fmt.Errorf("invalid apiServerPort: %w", err))
		}
	}
	switch c.Networking.IPFamily {
	case "", v1alpha4.IPv4Family, v1alpha4.IPv6Family, v1alpha4.DualStackFamily:
	default:
		errs = append(errs, fmt.Errorf("invalid ipFamily: %s", c.Networking.IPFamily))
	}
	switch c.Networking.KubeProxyMode {
	case "", v1alpha4.IPTablesProxyMode, v1alpha4.IPVSProxyMode, v1alpha4.NFTablesProxyMode, "none":
	default:
		errs = append(errs, fmt.Errorf("invalid kubeProxyMode: %s", c.Networking.KubeProxyMode))
	}
	for _, s := range []string{c.Networking.PodSubnet, c.Networking.ServiceSubnet} {
		if s == "" {
			continue
		}
		if _, _, err := net.ParseCIDR(s); err != nil {
			errs = append(errs, fmt.Errorf("invalid subnet %q: %w", s, err))
		}
	}
	errs = append(errs, validatePatches("cluster", c.KubeadmConfigPatches)...)

	controlPlanes := 0
	for i := range c.Nodes {
		n := &c.Nodes[i]
		where := fmt.Sprintf("node %d", i)
		role := n.Role
		if role == "" {
			role = v1alpha4.ControlPlaneRole // kind's default
		}
		switch role {
		case v1alpha4.ControlPlaneRole:
			controlPlanes++
		case v1alpha4.WorkerRole:
		default:
			errs = append(errs, fmt.Errorf("%s: %q is not a valid node role", where, n.Role))
		}
		// kind would default an empty image; this project pins every node image.
		if n.Image == "" {
			errs = append(errs, fmt.Errorf("%s: image is not set (pin kindest/node:<version>)", where))
		}
		// The digest of the image this kind release was built with must match, if pinned.
		defName, defDigest, _ := strings.Cut(defaults.Image, "@")
		if name, digest, ok := strings.Cut(n.Image, "@"); ok && name == defName && digest != defDigest {
			errs = append(errs, fmt.Errorf("%s: %s is %s in kind's defaults, not %s", where, name, defDigest, digest))
		}
		seen := map[string]bool{}
		for _, m := range n.ExtraPortMappings {
			if err := validatePort(m.HostPort); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid hostPort: %w", where, err))
			}
			if err := validatePort(m.ContainerPort); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid containerPort: %w", where, err))
			}
			switch m.Protocol {
			case "", v1alpha4.PortMappingProtocolTCP, v1alpha4.PortMappingProtocolUDP, v1alpha4.PortMappingProtocolSCTP:
			default:
				errs = append(errs, fmt.Errorf("%s: invalid port mapping protocol %q", where, m.Protocol))
			}
			if m.ListenAddress != "" && net.ParseIP(m.ListenAddress) == nil {
				errs = append(errs, fmt.Errorf("%s: invalid listenAddress %q", where, m.ListenAddress))
			}
			if m.HostPort > 0 {
				proto := m.Protocol
				if proto == "" {
					proto = v1alpha4.PortMappingProtocolTCP
				}
				key := fmt.Sprintf("%s:%d/%s", m.ListenAddress, m.HostPort, proto)
				if seen[key] {
					errs = append(errs, fmt.Errorf("%s: port mapping %s configured twice", where, key))
				}
				seen[key] = true
			}
		}
		errs = append(errs, validatePatches(where, n.KubeadmConfigPatches)...)
	}
	if controlPlanes < 1 {
		errs = append(errs, errors.New("must have at least one control-plane node"))
	}
	return errs
}

func validatePort(port int32) error {
	if port < -1 || port > 65535 { // -1: let the container runtime pick
		return fmt.Errorf("invalid port number: %d", port)
	}
	return nil
}

// validatePatches checks what kind needs of a strategic-merge patch (a YAML object with a kind,
// apiVersion optional) and that nodeRegistration.taints, where set, are well-formed taints.
func validatePatches(where string, patches []string) []error {
	var errs []error
	for i, p := range patches {
		var obj struct {
			Kind             string `json:"kind"`
			NodeRegistration *struct {
				Taints []struct {
					Key    string `json:"key"`
					Value  string `json:"value"`
					Effect string `json:"effect"`
				} `json:"taints"`
			} `json:"nodeRegistration"`
		}
		if err := yaml.Unmarshal([]byte(p), &obj); err != nil {
			errs = append(errs, fmt.Errorf("%s: kubeadmConfigPatches[%d] is not a YAML object: %w", where, i, err))
			continue
		}
		if obj.Kind == "" {
			errs = append(errs, fmt.Errorf("%s: kubeadmConfigPatches[%d] has no kind", where, i))
		}
		if obj.NodeRegistration == nil {
			continue
		}
		for j, t := range obj.NodeRegistration.Taints {
			if t.Key == "" {
				errs = append(errs, fmt.Errorf("%s: kubeadmConfigPatches[%d] taint %d has no key", where, i, j))
			}
			switch t.Effect {
			case "NoSchedule", "PreferNoSchedule", "NoExecute":
			default:
				errs = append(errs, fmt.Errorf("%s: kubeadmConfigPatches[%d] taint %d: invalid effect %q", where, i, j, t.Effect))
			}
		}
	}
	return errs
}
