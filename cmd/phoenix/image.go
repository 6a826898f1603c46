package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/images"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage the versioned image store"}
	cmd.PersistentFlags().String("state", "", "state directory holding the image store (required)")
	cmd.PersistentFlags().Bool("state-allow-shared", false, "allow a state directory that is not a mount point (labs and tests only)")
	cmd.AddCommand(newImageImportCmd(), newImageLsCmd())
	return cmd
}

// openImageStore opens the state volume (taking its lock, so this fails
// while a server owns it) and the image store inside it.
func openImageStore(cmd *cobra.Command) (*fleet.StateDir, *images.Store, error) {
	dir, _ := cmd.Flags().GetString("state")
	shared, _ := cmd.Flags().GetBool("state-allow-shared")
	if dir == "" {
		return nil, nil, fmt.Errorf("--state DIR is required")
	}
	st, err := fleet.OpenState(dir, shared, logger(cmd))
	if err != nil {
		return nil, nil, err
	}
	s, err := images.Open(st.Join("images"), st.Join("tmp"))
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return st, s, nil
}

func newImageImportCmd() *cobra.Command {
	var spec images.ImportSpec
	var kernel, initrd, rootfs, disk string
	cmd := &cobra.Command{
		Use:     "import NAME:VERSION --kernel FILE [--initrd FILE] [--cmdline S]",
		Short:   "Import artifacts as a new, read-only image version",
		Example: "  phoenix image import demo:1 --state /var/lib/phoenix --kernel build/demo/vmlinuz --initrd build/demo/initrd.img --cmdline 'console=ttyS0'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, version, err := images.ParseRef(args[0])
			if err != nil {
				return err
			}
			spec.Name, spec.Version = name, version
			spec.Files = map[string]string{}
			for role, path := range map[string]string{images.RoleKernel: kernel, images.RoleInitrd: initrd, images.RoleRootfs: rootfs, images.RoleDisk: disk} {
				if path != "" {
					spec.Files[role] = path
				}
			}
			st, store, err := openImageStore(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			img, err := store.Import(cmd.Context(), spec)
			if err != nil {
				return err
			}
			fmt.Printf("%s %s\n", img.Ref(), img.Digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kernel, "kernel", "", "kernel file (required)")
	f.StringVar(&initrd, "initrd", "", "initrd file")
	f.StringVar(&rootfs, "rootfs", "", "root filesystem (squashfs)")
	f.StringVar(&disk, "disk", "", "raw disk image")
	f.StringVar(&spec.Cmdline, "cmdline", "", "kernel command line")
	f.StringVar(&spec.Arch, "arch", "amd64", "architecture")
	f.StringVar(&spec.Mode, "mode", "memory", "boot mode: memory or disk")
	f.StringVar(&spec.Description, "description", "", "free-form description")
	cmd.MarkFlagRequired("kernel")
	return cmd
}

func newImageLsCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List image versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, store, err := openImageStore(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			list, err := store.List()
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(os.Stdout).Encode(list)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IMAGE\tDIGEST\tARCH\tMODE\tCREATED")
			for _, i := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.Ref(), shortDigest(i.Digest), i.Arch, i.Mode, i.Created.Format("2006-01-02 15:04"))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// shortDigest abbreviates a digest for tables, like git does.
func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
