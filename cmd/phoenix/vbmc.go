package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// vbmcConfig is the --config file of phoenix vbmc.
type vbmcConfig struct {
	Machines []vbmcMachine `yaml:"machines"`
}

type vbmcMachine struct {
	Name     string `yaml:"name"`
	UUID     string `yaml:"uuid"`
	MAC      string `yaml:"mac"`
	Tap      string `yaml:"tap"`
	Firmware string `yaml:"firmware"`
	Memory   int    `yaml:"memory"`
	Disk     string `yaml:"disk"`
}

// loadVBMCConfig reads and checks the machines file.
func loadVBMCConfig(path string) (*vbmcConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c vbmcConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(c.Machines) == 0 {
		return nil, fmt.Errorf("%s: no machines", path)
	}
	seen := map[string]bool{}
	for i, m := range c.Machines {
		switch {
		case m.Name == "":
			return nil, fmt.Errorf("%s: machine %d has no name", path, i+1)
		case strings.ContainsAny(m.Name, "/ ?#%"):
			return nil, fmt.Errorf("%s: machine name %q: it becomes a URL path segment", path, m.Name)
		case seen[m.Name]:
			return nil, fmt.Errorf("%s: machine %q twice", path, m.Name)
		case m.Firmware != "" && m.Firmware != vbmc.BIOS && m.Firmware != vbmc.UEFI:
			return nil, fmt.Errorf("%s: machine %s: firmware %q (want bios or uefi)", path, m.Name, m.Firmware)
		case m.MAC != "":
			if _, err := net.ParseMAC(m.MAC); err != nil {
				return nil, fmt.Errorf("%s: machine %s: %w", path, m.Name, err)
			}
		}
		seen[m.Name] = true
	}
	return &c, nil
}

func newVBMCCmd() *cobra.Command {
	var config, listen, user, passwordFile, work string
	var useTLS bool
	cmd := &cobra.Command{
		Use:   "vbmc",
		Short: "Run a virtual BMC: a Redfish service that powers and boots QEMU VMs",
		Long: `vbmc starts the QEMU VMs of --config powered off and serves a Redfish service
(sessions and Basic auth, ComputerSystem.Reset, the one-time boot override,
virtual media) that drives them through QMP, as a datacenter BMC drives a
server. It runs until Ctrl-C and then stops the VMs it started.

The config file lists the machines:

  machines:
    - name: vm1                # the Redfish system and manager ID
      mac: 52:54:00:99:00:01
      tap: tap0                # an existing tap device (none: an isolated NIC)
      firmware: uefi           # bios (default) or uefi
      memory: 512              # MiB
      disk: /var/lib/vm1.qcow2 # optional

Plain HTTP: listen on loopback or a lab network only.`,
		Example: `  phoenix vbmc --config vms.yaml --listen 127.0.0.1:8000 --username admin --password-file pw
  redfishtool -r 127.0.0.1:8000 -u admin -p "$(cat pw)" -S Never Systems -I vm1 reset On`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := logger(cmd)
			c, err := loadVBMCConfig(config)
			if err != nil {
				return err
			}
			if user == "" {
				return errors.New("--username is required (the BMC account)")
			}
			password := os.Getenv("PHOENIX_VBMC_PASSWORD")
			if passwordFile != "" {
				b, err := os.ReadFile(passwordFile)
				if err != nil {
					return fmt.Errorf("password file: %w", err)
				}
				password = strings.TrimRight(string(b), "\r\n")
			}
			if password == "" {
				return errors.New("no password: give --password-file (or PHOENIX_VBMC_PASSWORD)")
			}
			if work == "" {
				d, err := os.MkdirTemp("", "phoenix-vbmc-")
				if err != nil {
					return err
				}
				work = d
				defer os.RemoveAll(d)
			}
			// Listen before starting VMs: a taken port fails fast.
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			srv := &vbmc.Server{Username: user, Password: password, Log: log}
			scheme := "http"
			if useTLS {
				host, _, _ := net.SplitHostPort(listen)
				conf, fp, err := vbmc.SelfSignedTLS(host)
				if err != nil {
					ln.Close()
					return err
				}
				srv.TLS, scheme = conf, "https"
				fmt.Fprintf(cmd.OutOrStdout(), "vbmc: self-signed certificate, SHA-256 %s (clients: insecure: true)\n", fp)
			}
			var started []*vbmc.Machine
			defer func() {
				for _, m := range started {
					m.Stop()
				}
			}()
			for _, mc := range c.Machines {
				m := &vbmc.Machine{
					Name: mc.Name, UUID: mc.UUID, MAC: mc.MAC, Tap: mc.Tap, Firmware: mc.Firmware,
					Memory: mc.Memory, Disk: mc.Disk,
					WorkDir:   filepath.Join(work, mc.Name),
					SerialLog: filepath.Join(work, mc.Name+".serial.log"),
					Log:       log,
				}
				if err := m.Start(ctx); err != nil {
					ln.Close()
					return err
				}
				started = append(started, m)
				srv.Systems = append(srv.Systems, m)
				fmt.Fprintf(cmd.OutOrStdout(), "vbmc: %s (%s, mac %s) powered off; serial: %s\n", m.Name, m.Info().Firmware, m.MAC, m.SerialLog)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "vbmc: Redfish service at %s://%s/redfish/v1/\n", scheme, ln.Addr())
			return srv.Serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "machines file (YAML)")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8000", "address of the Redfish service")
	cmd.Flags().StringVar(&user, "username", "", "BMC user name")
	cmd.Flags().StringVar(&passwordFile, "password-file", "", "file holding the BMC password (or env PHOENIX_VBMC_PASSWORD)")
	cmd.Flags().StringVar(&work, "work", "", "directory for QMP sockets, UEFI variables, media and serial logs (default: a temporary one, removed at exit)")
	cmd.Flags().BoolVar(&useTLS, "tls", false, "serve HTTPS with a new self-signed certificate, as a BMC's factory one (clients then need insecure: true)")
	cmd.MarkFlagRequired("config")
	return cmd
}
