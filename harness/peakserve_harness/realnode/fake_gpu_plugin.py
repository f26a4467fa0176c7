"""A device plugin that speaks the kubelet's real device-plugin API (v1beta1) and advertises
``nvidia.com/gpu`` devices with no hardware behind them, so GPU-requesting pods schedule on the real node.

The node is labelled ``peakserve.io/fake-gpu=true`` and gets no ``nvidia.com/gpu.product`` label, so it
is never mistaken for a real GPU node. Allocate only sets environment variables naming the devices.
Written in Go (built by binaries.py) because the API is gRPC over the kubelet's unix socket.
"""

from __future__ import annotations

FAKE_GPU_LABEL = ("peakserve.io/fake-gpu", "true")
RESOURCE = "nvidia.com/gpu"
# The kubelet only looks for plugin sockets in its fixed device-plugin directory.
SOCKET_NAME = "peakserve-fake-gpu.sock"

MAIN_GO = """package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	api "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	api.UnimplementedDevicePluginServer
	devices []*api.Device
}

func (p *plugin) GetDevicePluginOptions(context.Context, *api.Empty) (*api.DevicePluginOptions, error) {
	return &api.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *api.Empty, s grpc.ServerStreamingServer[api.ListAndWatchResponse]) error {
	if err := s.Send(&api.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *api.AllocateRequest) (*api.AllocateResponse, error) {
	resp := &api.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &api.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(c.DevicesIds, ","),
				"PEAKSERVE_FAKE_GPU": "true"}})
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(context.Context, *api.PreStartContainerRequest) (*api.PreStartContainerResponse, error) {
	return &api.PreStartContainerResponse{}, nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *api.PreferredAllocationRequest) (*api.PreferredAllocationResponse, error) {
	return &api.PreferredAllocationResponse{}, nil
}

func main() {
	count := flag.Int("devices", 2, "fake devices to advertise")
	resource := flag.String("resource", "nvidia.com/gpu", "extended resource name")
	endpoint := flag.String("socket", "peakserve-fake-gpu.sock", "socket name in the device-plugin dir")
	flag.Parse()
	p := &plugin{}
	for i := 0; i < *count; i++ {
		p.devices = append(p.devices, &api.Device{ID: fmt.Sprintf("fake-gpu-%d", i), Health: api.Healthy})
	}
	path := filepath.Join(api.DevicePluginPath, *endpoint)
	os.Remove(path)
	lis, err := net.Listen("unix", path)
	if err != nil {
		panic(err)
	}
	server := grpc.NewServer()
	api.RegisterDevicePluginServer(server, p)
	go server.Serve(lis)
	conn, err := grpc.NewClient("unix://"+api.KubeletSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = api.NewRegistrationClient(conn).Register(ctx, &api.RegisterRequest{
		Version: api.Version, Endpoint: *endpoint, ResourceName: *resource})
	if err != nil {
		panic(err)
	}
	fmt.Printf("registered %d %s devices at %s\\n", *count, *resource, path)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	server.Stop()
	os.Remove(path)
}
"""
